"""Whole-job resume time at step 10 vs step 10,000 of one training run.

    python benchmarks/bench_resume_job.py [--data runs/default/latents] [--steps 10 10000] [--repeats 3]

Trains the default pretraining config (3-source mix, its loader and checkpoints) with a narrow
model so that 10,000 CPU steps take minutes: first to step 10 (checkpoint), then on to step
10,000 (checkpoint) in the same run folder. Then, alternating, each checkpoint is resumed in a
copy of the run folder that holds only it, and the time from launching ``uva-pretrain`` to the
end of the first new step is taken from the job's own log (one log line per step): interpreter
start, DeepSpeed setup, checkpoint load, data position restore and one step. Medians.

The continuation to 10,000 steps is launched with ``total_steps=10000``, so the learning-rate
schedule of the second leg is not the one an uninterrupted 10,000-step run would have had; the
resume cost does not depend on it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NARROW = ["model.overrides.width=32", "model.overrides.decoder_width=32", "model.overrides.num_heads=2",
          "model.overrides.encoder_depth=1", "model.overrides.decoder_depth=1", "model.overrides.head_width=32",
          "model.overrides.action_head_width=32", "model.overrides.head_depth=1",
          "model.overrides.action_head_depth=1", "micro_batch_size=4", "eval_every=0"]


def launch(run_dir: Path, data: Path, total: int, log: Path, extra: list[str] = (), log_every: int = 1) -> float:
    """Run uva-pretrain to ``total`` steps in ``run_dir``; returns the seconds from launch to the
    first step line it printed (with ``log_every=1``: the job's first completed step)."""
    sources = (f"data.sources=[{{path: {data}/pusht, weight: 3}}, {{path: {data}/robot, weight: 1}}, "
               f"{{path: {data}/human, weight: 1}}]")
    cmd = [sys.executable, "-m", "pipeline.train", "--config", str(ROOT / "configs/pretrain/default.yaml"),
           "--set", sources, "--set", f"run_dir={run_dir}", "--set", f"total_steps={total}",
           "--set", f"log_every={log_every}", "--set", f"checkpoint_every={total}", *[a for s in (*NARROW, *extra) for a in ("--set", s)]]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    t0 = time.perf_counter()
    first = None
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            out.write(line)
            if first is None and re.match(r"\[train\] step \d+/", line):
                first = time.perf_counter() - t0
        if proc.wait() != 0:
            sys.exit(f"uva-pretrain failed (exit {proc.returncode}); log: {log}")
    if first is None:
        sys.exit(f"no step line in {log}")
    return first


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT / "runs/default/latents"))
    p.add_argument("--steps", nargs=2, type=int, default=[10, 10000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default=None, help="folder for the run (default: a temporary one)")
    args = p.parse_args()
    data = Path(args.data).resolve()
    if not (data / "pusht" / "index.json").is_file():
        sys.exit(f"no shard sets under {data}: run scripts/run_default.sh first (or pass --data)")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_resume_job_"))
    work.mkdir(parents=True, exist_ok=True)
    run = work / "run"
    early, late = args.steps
    ckpts = run / "checkpoints"
    if not (ckpts / f"step_{late}" / "COMPLETE").is_file():
        shutil.rmtree(run, ignore_errors=True)
        t = time.perf_counter()
        launch(run, data, early, work / "leg1.log", log_every=early)
        launch(run, data, late, work / "leg2.log", ["keep_last=2"], log_every=500)
        print(f"trained to step {late} in {time.perf_counter() - t:.0f} s (logs in {work})", flush=True)
    times: dict[int, list[float]] = {early: [], late: []}
    for r in range(args.repeats):
        for n in (early, late):
            trial = work / f"resume_{n}"
            shutil.rmtree(trial, ignore_errors=True)
            keep = f"step_{n}"
            shutil.copytree(run, trial, ignore=lambda d, names, keep=keep: [
                x for x in names if x.startswith("step_") and x != keep])
            times[n].append(launch(trial, data, n + 1, work / f"resume_{n}_{r}.log"))
            log = (work / f"resume_{n}_{r}.log").read_text()
            if f"resumed from step_{n} at step {n}" not in log or f"step {n + 1}/{n + 1}" not in log:
                sys.exit(f"resume from step {n} did not continue at step {n + 1}; see {work}/resume_{n}_{r}.log")
    a, b = statistics.median(times[early]), statistics.median(times[late])
    print(f"{'resumed at step':>16} {'launch -> first new step, s (median)':>38} {'runs':>24}")
    for n, med in ((early, a), (late, b)):
        print(f"{n:16d} {med:38.2f} {' '.join(f'{x:.2f}' for x in times[n]):>24}")
    print(f"ratio step {late} / step {early}: {b / a:.3f}")


if __name__ == "__main__":
    main()
