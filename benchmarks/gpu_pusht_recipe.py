"""The PushT GPU recipe: demos, encode, train, closed loop, on one GPU machine in about 25 minutes.

    bash scripts/gpu_pusht.sh [--json FILE]          # installs the wheel set from .whl/ if there
    python benchmarks/gpu_pusht_recipe.py [--demos 200] [--steps 12000] [--batch 128] [--json FILE]
    python benchmarks/gpu_pusht_recipe.py --quick --device cpu   # the same stages, tiny, on a CPU

What it runs (every stage timed, one table at the end, as ``gpu_check.py`` prints):
 1. demos   ``--demos`` PushT expert episodes from the simulator, one process per core, kept in
            memory (the 16 cores of a lent H100 machine: 200 demos in well under a minute).
 2. encode  the shipped kl8 VAE on the GPU (bf16), frames straight from memory into a shard set
            written by the encode job's own writers.
 3. train   ``python -m pipeline.train`` on the demos, one rank, DeepSpeed ZeRO-2, bf16: the
            whole unified model (every masked mode, policy-heavy as the CPU PushT recipe) at
            ``--size`` (default uva-S: width 512, 8 + 8 blocks) with patch 1, i.e. 12 x 12 tokens
            per frame (the reference's 16 x 16 at 256 px; 96 px frames give a 12 x 12 latent),
            dropout 0.1, no weight decay on 1-d parameters and 64 noise draws per action chunk
            (``action_batch_mul``, as the CPU fine-tuning recipes); the chunk condition (the
            reference's per-action condition measured worse on the CPU PushT recipe).
 4. policy  the EMA weights exported as a bundle and run closed loop on the 50 PushT test seeds
            (16 sampling steps, 4 of 8 actions per call), one simulator process per core, the
            policy on the GPU in each.

The step count is the time budget: ``--steps`` at ``--batch`` should take the 15-17 minutes the
other stages leave of 25. Nothing here is tuned on a GPU yet: the first run on one is the
calibration (its samples/s are in the table; scale ``--steps`` to the budget from it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gpu_check  # noqa: E402  (a sibling script: its demos, encode, training and export stages)
from gpu_check import FAILED, OUT, ROWS, row, staged  # noqa: E402

ROOT = HERE.parent


def train_command(args, latents: Path, run_dir: Path) -> list[str]:
    arch = ("{latent_channels: 16, latent_size: 12, patch_size: %d, dropout: 0.1, action_batch_mul: 64}"
            % args.patch)
    sets = [f"data.sources=[{{path: {latents}}}]", "eval_sources=[]", "eval_every=0", f"total_steps={args.steps}",
            f"checkpoint_every={max(args.steps // 4, 1)}", "log_every=100", f"run_dir={run_dir}", "zero_stage=2",
            f"tracking_uri=file:{run_dir / 'mlruns'}", "data.normalization=q01_q99",
            "data.num_views=1", "data.action_dim=2", "data.proprio_dim=2",
            "data.window={num_history: 2, num_future: 2, frame_stride: 4, action_horizon: 8}",
            "mode_weights={policy: 3.0, video: 1.0, forward_dynamics: 0.5, inverse_dynamics: 0.5, joint: 1.0}",
            f"data.num_workers={args.data_workers}", "data.shuffle_episodes=64", "data.shuffle_buffer=1024",
            f"micro_batch_size={args.batch}", f"optim.lr={args.lr}", "optim.warmup_steps=500",
            "optim.weight_decay=0.02", "optim.no_decay_1d=true", "optim.ema_decay=0.999",
            f"model.size={args.size}", f"model.overrides={arch}"]
    if args.device == "cuda":
        sets.append("precision=bf16")
    cmd = [sys.executable, "-m", "pipeline.train", "--config", str(ROOT / "configs/pretrain/default.yaml")]
    return cmd + [a for s in sets for a in ("--set", s)] + ["--losses-out", str(run_dir / "result")]


def stage_train(args, latents: Path, run_dir: Path) -> None:
    import statistics

    res, _, wall = gpu_check.run_train(train_command(args, latents, run_dir), run_dir)
    hist = res["throughput"][1:] or res["throughput"]
    row("train", f"{args.size} patch {args.patch}, {res['step']} steps, wall s", wall)
    row("train", f"samples/s (batch {args.batch})", statistics.median(h["samples_per_s"] for h in hist))
    row("train", "data wait", f"{statistics.median(h['data_wait_frac'] for h in hist):.2%}")
    row("train", f"peak memory MB ({res['memory_kind']})", float(res["peak_memory_mb"]))
    row("train", "loss first / last", f"{res['losses'][0]:.4f} / {res['losses'][-1]:.4f}")


def stage_export(latents: Path, run_dir: Path, enc: dict, bundle: Path) -> None:
    """The EMA weights as a policy bundle with the demos' action and proprioception statistics."""
    from pipeline.components.checkpoint import export_weights
    from pipeline.export import export_bundle
    from pipeline.robots import check_proprio, check_stats, load_robot
    from uva_io.shardset import read_stats

    w = json.loads((run_dir / "config.json").read_text())["data"]["window"]
    robot = load_robot("pusht")
    entry = check_stats(robot, read_stats(latents), str(latents))
    _, weights, arch = export_weights(run_dir / "checkpoints")
    window = {k: w[k] for k in ("num_history", "num_future", "frame_stride", "action_horizon")}
    export_bundle(bundle, weights, arch, robot, entry, window, enc["vae"], enc["vae_id"], 16,
                  proprio_stats=check_proprio(robot, entry, str(latents)), vae_precision=enc["precision"])


def stage_policy(args, bundle: Path) -> dict:
    import functools

    from pipeline.policy import load_policy
    from uva_sim.pusht.runner import TEST_SEEDS, evaluate_policy

    seeds = TEST_SEEDS[: args.seeds]
    res = evaluate_policy(functools.partial(load_policy, bundle, device=args.device), seeds,
                          workers=min(args.workers, len(seeds)), max_steps=args.eval_steps, action_steps=4, log=None)
    row("policy", f"PushT closed loop, {len(seeds)} test seeds: score", res["score"])
    row("policy", "successes / wall s", f"{sum(e['success'] for e in res['episodes'])} / {res['seconds']:.1f}")
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--work", default="/tmp/uva_gpu_pusht", help="scratch folder (latents, run, bundle)")
    p.add_argument("--json", default=None, help="also write the table (and the per-seed results) here")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the stages, measures nothing")
    p.add_argument("--demos", type=int, default=200)
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--size", default="uva-S")
    p.add_argument("--patch", type=int, default=1, help="latent patch per token (1: 12 x 12 tokens per frame)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default=None, help="write each stage's rows and status here as NN_<stage>.json as it ends")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall seconds for the whole recipe: --steps becomes what fits after demos and encode, "
                        "at --expect-samples-per-s, leaving --eval-reserve-s for the closed loop")
    p.add_argument("--expect-samples-per-s", type=float, default=None,
                   help="training samples/s to size --steps by (e.g. from gpu_check's train row)")
    p.add_argument("--eval-reserve-s", type=float, default=150.0,
                   help="seconds kept for start-up, export and the closed loop under --budget-s")
    args = p.parse_args(argv)
    if args.budget_s is not None and not args.expect_samples_per_s:
        p.error("--budget-s needs --expect-samples-per-s")
    OUT["dir"] = args.out
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    if args.quick:
        args.demos, args.steps, args.batch, args.size, args.patch = 2, 4, 4, "uva-tiny", 2
    args.demo_steps, args.eval_steps = (30, 10) if args.quick else (300, 300)
    args.seeds = 1 if args.quick else 50
    args.data_workers = 1 if args.quick else min(8, max(1, (os.cpu_count() or 2) // 2))
    work = Path(args.work)
    latents, run_dir, bundle = work / "latents", work / "train", work / "bundle"
    for path in (latents, run_dir, bundle):
        if path.exists():
            import shutil

            shutil.rmtree(path)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU x{torch.get_num_threads()}"
    print(f"[gpu-pusht] {name}; torch {torch.__version__}; python {sys.version.split()[0]}", flush=True)
    started = time.perf_counter()
    results = staged("demos", gpu_check.stage_demos, args)
    enc = staged("encode", gpu_check.stage_encode, args, results, latents, needs=("demos",))
    del results
    if args.budget_s is not None:  # the steps that fit what is left of the budget
        left = args.budget_s - (time.perf_counter() - started) - args.eval_reserve_s
        args.steps = max(50, int(left * args.expect_samples_per_s / args.batch))
        row("train", f"steps sized to {left:.0f} s at {args.expect_samples_per_s:.0f} samples/s", args.steps)
    staged("train", stage_train, args, latents, run_dir, needs=("encode",))
    staged("export", stage_export, latents, run_dir, enc, bundle, needs=("train",))
    res = staged("policy", stage_policy, args, bundle, needs=("export",)) or {"episodes": []}
    staged("total", lambda: row("total", "wall s", time.perf_counter() - started))
    width = max(len(w) for _, w, _ in ROWS)
    print(f"\n{name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, "
          f"`python benchmarks/gpu_pusht_recipe.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
    print(f"| stage | {'figure':{width}} | value |\n|---|{'-' * (width + 2)}|---|")
    for stage, what, value in ROWS:
        print(f"| {stage} | {what:{width}} | {value} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "rows": ROWS,
                                               "episodes": res["episodes"], "failed": sorted(FAILED)}, indent=1))
    if FAILED:
        sys.exit(f"[gpu-pusht] stages that did not finish: {', '.join(sorted(FAILED))}")


if __name__ == "__main__":
    main()
