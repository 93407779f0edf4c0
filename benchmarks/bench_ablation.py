"""PushT ablations: fine-tune variants from one pretrained model, closed-loop scores paired over
the same test seeds, and held-out action error.

Each ``--variant NAME FINETUNE_ARGS EVAL_ARGS`` is a fine-tune (``uva-finetune --robot pusht
--pretrained P --data D --config configs/finetune/pusht_default.yaml`` plus FINETUNE_ARGS, e.g.
``--set use_proprio=false``) or, with FINETUNE_ARGS ``@OTHER`` (a variant name or a bundle
folder), another variant's policy; then ``uva-eval`` on the seeds plus EVAL_ARGS (e.g.
``--sampling-steps 100``). Work already done (an exported bundle, an eval's results.json) is
reused, so an interrupted ablation resumes. Printed: a markdown table with each variant's score,
successes, the paired difference to the first variant (mean +- standard error over the seeds,
seeds better / worse), the held-out action MSE (normalized units, sampled chunks of ``--val``
windows, with the variant's sampling settings) and those chunks' jitter relative to the demos'
(mean step between consecutive actions; a low MSE with a jitter far from 1 does not drive well).

    python benchmarks/bench_ablation.py --pretrained runs/default/pretrain/checkpoints \\
        --data runs/default/latents/pusht --val runs/default/latents/pusht_val --out runs/ablate \\
        --variant baseline "@runs/default/finetune/export" "" \\
        --variant no_proprio "--set use_proprio=false" "" \\
        --variant steps100 "@baseline" "--sampling-steps 100"

FINETUNE_ARGS may name another ``--pretrained`` or ``--data`` (the last one counts), e.g. a
pretraining-benefit run: ``--variant scratch " --from-scratch" ""`` (an argument that starts
with a dash needs a leading space, or argparse takes it for an option) and ``--pair baseline
scratch`` for the paired difference of any two variants.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}; see {log}")
    print(f"# {time.time() - t0:.0f} s: {shlex.join(cmd)}", flush=True)


def heldout_mse(bundle: Path, val: Path, eval_args: list[str], max_windows: int) -> tuple[float, float]:
    """Mean of ``heldout_window_errors`` over the windows, and the jitter."""
    errs, jitter = heldout_window_errors(bundle, val, eval_args, max_windows)
    return float(errs.mean()), jitter


def heldout_window_errors(bundle: Path, val: Path, eval_args: list[str], max_windows: int) -> tuple[np.ndarray, float]:
    """Per-window sampled-chunk MSE (absolute normalized units, the robot's dimensions; a relative policy's
    chunks are made absolute first) on the held-out windows, and
    the chunks' jitter: the mean step between consecutive sampled actions over the demos' (1 =
    as smooth as the demonstrations; a sampler that draws each action on its own zigzags)."""
    from pipeline.data import WindowConfig, cut_windows
    from pipeline.policy import load_policy
    from pipeline.robots import normalize_actions
    from uva import rng
    from uva_io.shardset import iter_tar_samples

    opts = argparse.ArgumentParser()
    opts.add_argument("--sampling-steps", type=int, default=None)
    opts.add_argument("--temperature", type=float, default=None)
    opts.add_argument("--action-clip", type=float, default=None)
    known, _ = opts.parse_known_args(eval_args)
    policy = load_policy(bundle, sampling_steps=known.sampling_steps, temperature=known.temperature,
                         action_clip=known.action_clip)
    w = policy.meta["window"]
    window = WindowConfig(**{k: int(w[k]) for k in ("num_history", "num_future", "frame_stride", "action_horizon")})
    mode, mask = policy.normalization, policy.norm_mask
    wins = []
    for tar in sorted(val.glob("*.tar")):
        for s in iter_tar_samples(tar):
            act = normalize_actions(s["actions.npy"], policy.stats, mode, mask).astype(np.float32)
            raw = s["proprio.npy"].astype(np.float32) if policy.proprio_dim else None
            lang = s.get("lang.npy") if policy.config.lang_dim else None
            lat = s[f"latents.{policy.cameras[0]}.npy"].astype(np.float32)
            for x in cut_windows(lat, act, window, raw):  # the truth: absolute, normalized
                wins.append((x["history"], x["actions"], x.get("proprio"), lang))
    pick = np.random.default_rng(0).permutation(len(wins))[:max_windows]
    cfg, a = policy.config, policy.robot.action_dim
    errs, steps, demo_steps = [], [], []
    g = rng.generator(0, policy.device)
    for i in range(0, len(pick), 64):
        part = [wins[j] for j in pick[i:i + 64]]
        hist = torch.from_numpy(np.stack([p[0] for p in part]))
        proprio = (torch.cat([policy.normalize_proprio(p[2]) for p in part]) if policy.proprio_dim else None)
        lang = None
        if cfg.lang_dim:
            zero = np.zeros((cfg.lang_tokens, cfg.lang_dim), np.float32)
            lang = torch.from_numpy(np.stack([zero if p[3] is None else p[3].astype(np.float32) for p in part]))
        emb = policy.embodiment.expand(len(part)) if policy.embodiment is not None else None
        pred = policy.model.predict_action(hist, num_steps=policy.sampling_steps, generator=g, proprio=proprio,
                                           lang=lang, temperature=policy.temperature, embodiment=emb,
                                           action_mask=None if policy.action_mask is None
                                           else policy.action_mask.expand(len(part), -1))
        pred = pred[..., :a].float()
        if policy.relative:  # offsets from the last history state -> absolute, normalized like the truth
            pred = torch.from_numpy(np.stack([
                normalize_actions(policy.to_robot_units(c.numpy(), p[2][-1]), policy.stats, mode, mask)
                for c, p in zip(pred, part)]).astype(np.float32))
        truth = torch.from_numpy(np.stack([p[1] for p in part]))
        errs.append(((pred - truth[..., :a]) ** 2).mean((1, 2)))
        steps.append(pred.diff(dim=1).norm(dim=-1).mean(1))
        demo_steps.append(truth[..., :a].diff(dim=1).norm(dim=-1).mean(1))
    return torch.cat(errs).numpy(), float(torch.cat(steps).mean() / torch.cat(demo_steps).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pretrained", default="runs/default/pretrain/checkpoints")
    p.add_argument("--data", default="runs/default/latents/pusht")
    p.add_argument("--val", default="runs/default/latents/pusht_val", help="held-out PushT latent set")
    p.add_argument("--out", default="runs/ablate")
    p.add_argument("--seeds", default="100000:100050")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--val-windows", type=int, default=512)
    p.add_argument("--variant", nargs=3, action="append", required=True, metavar=("NAME", "FINETUNE_ARGS", "EVAL_ARGS"))
    p.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="also print the paired difference B - A of two variants (e.g. pretrained vs scratch)")
    args = p.parse_args()
    out = Path(args.out)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} cpus={os.cpu_count()} torch={torch.__version__}",
          flush=True)
    bundles, rows = {}, []
    for name, ft, ev in args.variant:
        where = out / name
        if ft.startswith("@"):
            bundle = bundles.get(ft[1:]) or Path(ft[1:])
        else:
            bundle = where / "finetune" / "export"
            if not (bundle / "policy.json").is_file():
                run([str(BIN / "uva-finetune"), "--robot", "pusht", "--pretrained", args.pretrained, "--data", args.data,
                     "--config", "configs/finetune/pusht_default.yaml", "--run-dir", str(where / "finetune"),
                     *shlex.split(ft)], where / "finetune.log")
        if not (bundle / "policy.json").is_file():
            raise SystemExit(f"variant {name}: no policy bundle at {bundle}")
        bundles[name] = bundle
        results = where / "eval" / "results.json"
        if not results.is_file():
            run([str(BIN / "uva-eval"), "--env", "pusht", "--policy", str(bundle), "--seeds", args.seeds,
                 "--workers", str(args.workers), "--output", str(where / "eval"), "--no-videos", *shlex.split(ev)],
                where / "eval.log")
        res = json.loads(results.read_text())
        rewards = {e["seed"]: e["max_reward"] for e in res["episodes"]}
        mse, jitter = heldout_mse(bundle, Path(args.val), shlex.split(ev), args.val_windows)
        rows.append((name, ft, ev, res, rewards, (mse, jitter)))
        print(f"{name}: score {res['score']:.4f}, successes {sum(e['success'] for e in res['episodes'])}/"
              f"{res['num_episodes']}, held-out action mse {mse:.4f}, jitter {jitter:.2f}", flush=True)
    base = rows[0][4]
    by_name = {r[0]: r for r in rows}
    unknown = [n for pair in args.pair for n in pair if n not in by_name]
    if unknown:
        raise SystemExit(f"--pair: no variant named {unknown[0]!r}")
    print_table(rows, base)
    if args.pair:
        print("\n| B | A | score B | score A | paired diff B - A (+- SE) | better / worse seeds |")
        print("|---|---|---|---|---|---|")
        for a, b in args.pair:
            d, se = paired(by_name[a][4], by_name[b][4])
            print(f"| {b} | {a} | {by_name[b][3]['score']:.4f} | {by_name[a][3]['score']:.4f} | "
                  f"{d.mean():+.4f} +- {se:.4f} | {int((d > 1e-9).sum())} / {int((d < -1e-9).sum())} |")


def paired(base: dict, rewards: dict) -> tuple[np.ndarray, float]:
    """Per-seed differences rewards - base over the common seeds, and their standard error."""
    seeds = sorted(set(base) & set(rewards))
    d = np.array([rewards[s] - base[s] for s in seeds])
    return d, (d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan"))


def print_table(rows: list, base: dict) -> None:
    print("\n| variant | fine-tune | eval | score | successes | paired diff vs "
          f"{rows[0][0]} (+- SE) | better / worse seeds | held-out action MSE | chunk jitter / demos' |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, ft, ev, res, rewards, (mse, jitter) in rows:
        d, se = paired(base, rewards)
        print(f"| {name} | `{ft or '-'}` | `{ev or '-'}` | {res['score']:.4f} | "
              f"{sum(e['success'] for e in res['episodes'])}/{res['num_episodes']} | {d.mean():+.4f} +- {se:.4f} | "
              f"{int((d > 1e-9).sum())} / {int((d < -1e-9).sum())} | {mse:.4f} | {jitter:.2f} |")


if __name__ == "__main__":
    main()
