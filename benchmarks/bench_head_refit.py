"""Is the embedded default's PushT policy limited by its action head or by its condition?

A joint fine-tuning step pays for one backbone pass per window, and the action head, a small
MLP, sees only ``micro_batch_size`` distinct conditions per step (its noise draws reuse them).
With perfect perception (bench_state_policy.py) the same head needed ~24x the fine-tune's
samples to succeed. This script gives the fine-tuned head those samples on the real condition:
the backbone of a finished fine-tune is kept frozen, every training window's policy condition
(history frames and proprioception, every future token masked, no actions: what the policy
computes at inference) is computed once, and the action head alone trains on the cached
conditions at a large batch (AdamW, warmup then cosine, EMA). Per ``--run [reset:]BATCH:STEPS``
(``reset``: the head from fresh weights instead of the fine-tuned one) it prints the head's
diffusion loss on the training windows and on held-out demos' windows (before and after), the
held-out sampled-chunk MSE, the closed-loop PushT score on the test seeds and the paired
difference to the fine-tune's own bundle.

    python benchmarks/bench_head_refit.py --finetune runs/default/finetune \
        --val runs/default/latents/pusht_val --out runs/head_refit --run 256:6000 --run reset:256:6000

If the held-out loss stays where it is while the training loss falls, the head is not what
limits the policy: the condition does not carry what unseen states need.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from pipeline.data import merged_stats
from pipeline.head_fit import action_windows, fit_action_head, head_loss, policy_conditions

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def evaluate(bundle: Path, out: Path, seeds: str, workers: int) -> dict:
    """uva-eval's results for ``bundle`` (kept when made before)."""
    res = out / "results.json"
    if not res.is_file():
        subprocess.run([str(BIN / "uva-eval"), "--env", "pusht", "--policy", str(bundle), "--seeds", seeds,
                        "--workers", str(workers), "--output", str(out), "--no-videos"], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
    return json.loads(res.read_text())


def main() -> None:
    from pipeline.train_config import TrainConfig
    from uva_io.config import from_dict

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_ablation import heldout_mse, paired

    from pipeline.policy import load_policy

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--finetune", default="runs/default/finetune", help="a finished uva-finetune run folder")
    p.add_argument("--val", default="runs/default/latents/pusht_val", help="held-out PushT latent set")
    p.add_argument("--out", default="runs/head_refit")
    p.add_argument("--run", action="append", default=[], metavar="[reset:]BATCH:STEPS")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", default="100000:100050")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--val-windows", type=int, default=512)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    runs = []
    for r in args.run or ["256:6000"]:
        parts = r.split(":")
        reset = parts[0] == "reset"
        if reset:
            parts = parts[1:]
        if len(parts) != 2:
            p.error(f"--run {r}: expected [reset:]BATCH:STEPS")
        runs.append((r.replace(":", "_"), reset, *map(int, parts)))
    ft, out = Path(args.finetune), Path(args.out)
    bundle = ft / "export"
    last = sorted(ft.glob("stage*_*"))[-1]
    data = from_dict(TrainConfig, json.loads((last / "config.json").read_text())).data
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads; fine-tune {ft} (its bundle's weights), held-out {args.val}", flush=True)
    model = load_policy(bundle).model  # the bundle's weights in fp32 on the CPU, eval mode
    t0 = time.perf_counter()
    stats = merged_stats(data.sources)
    train = policy_conditions(model, action_windows(data, stats))
    val = policy_conditions(model, action_windows(replace(data, sources=[replace(data.sources[0], path=args.val)]),
                                                  stats))
    print(f"# conditions: {train.num_windows} training windows, {val.num_windows} held-out, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    base = evaluate(bundle, out / "eval_finetune", args.seeds, args.workers)
    mse, _ = heldout_mse(bundle, Path(args.val), [], args.val_windows)
    rewards = lambda res: {e["seed"]: e["max_reward"] for e in res["episodes"]}  # noqa: E731
    rows = [("the fine-tune's head", head_loss(model, train), head_loss(model, val), mse, 0.0, base, (0.0, 0.0))]
    for name, reset, batch, steps in runs:
        m = copy.deepcopy(model)
        if reset:
            m.action_head.reset_parameters()
        t0 = time.perf_counter()
        fit_action_head(m, train, steps, batch, args.lr, warmup_steps=100, ema_decay=0.999, seed=0,
                        log=lambda x, s: print(f"  {name} step {s}: loss {x['loss']:.5f}", flush=True),
                        log_every=1000)
        secs = time.perf_counter() - t0
        dest = out / name / "export"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(bundle, dest)
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(dest / "model.safetensors"))
        shutil.rmtree(out / name / "eval", ignore_errors=True)
        res = evaluate(dest, out / name / "eval", args.seeds, args.workers)
        mse, _ = heldout_mse(dest, Path(args.val), [], args.val_windows)
        label = f"{'fresh' if reset else 'fine-tuned'} head, {steps} steps of {batch} rows on cached conditions"
        rows.append((label, head_loss(m, train), head_loss(m, val), mse, secs, res,
                     paired(rewards(base), rewards(res))))
    print("\n| action head | train loss | held-out loss | held-out action MSE | train s | score | successes "
          "| vs the fine-tune (+- SE) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, tl, vl, mse, secs, res, (d, se) in rows:
        d = float(np.mean(d))
        succ = sum(e["success"] for e in res["episodes"])
        print(f"| {label} | {tl:.4f} | {vl:.4f} | {mse:.4f} | {secs:.0f} | {res['score']:.4f} | "
              f"{succ}/{len(res['episodes'])} | {d:+.3f} +- {se:.3f} |")


if __name__ == "__main__":
    main()
