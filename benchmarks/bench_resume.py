"""Resume cost of the training data stream at step 10 vs step 10,000 of one run.

    python benchmarks/bench_resume.py [--data runs/default/latents] [--steps 10 10000] [--repeats 3]

Reads the default pretraining config's loader (3-source mix, batch 16, 1 loader worker) for N
batches, takes the data position a checkpoint would hold after step N, and times getting the
first batch of step N + 1:
- "position": a new loader restored from the saved position (what a resume does now);
- "replay": a new loader that reads and drops N batches first (what a resume did before).
Only the data side is timed: loading model and optimizer state does not depend on the step.
Each variant runs ``--repeats`` times, alternating; medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT / "runs/default/latents"))
    p.add_argument("--steps", nargs="+", type=int, default=[10, 10000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--replay-up-to", type=int, default=10000, help="skip the replay variant above this step")
    args = p.parse_args()
    import torch

    from pipeline.data import DataPosition, SourceConfig, make_loader
    from pipeline.train_config import TrainConfig
    from uva_io.config import load_config

    data = Path(args.data)
    if not (data / "pusht" / "index.json").is_file():
        sys.exit(f"no shard sets under {data}: run scripts/run_default.sh first (or pass --data)")
    cfg = load_config(TrainConfig, str(ROOT / "configs/pretrain/default.yaml"), [])
    dcfg = replace(cfg.data, sources=[SourceConfig(str(data / "pusht"), 3.0), SourceConfig(str(data / "robot")),
                                      SourceConfig(str(data / "human"))])
    batch = cfg.micro_batch_size
    print(f"loader: 3 sources, batch {batch}, {dcfg.num_workers} worker(s), pool {dcfg.shuffle_episodes} episodes, "
          f"buffer {dcfg.shuffle_buffer} windows")
    print(f"{'step':>6} {'position s':>11} {'replay s':>9} {'first batch equal':>18}")
    for n in args.steps:
        run, pos = iter(make_loader(dcfg, batch)), DataPosition(dcfg.num_workers)
        t = time.perf_counter()
        for _ in range(n):
            pos.take(next(run))
        reach = time.perf_counter() - t
        state = pos.state()
        want = pos.take(next(run))
        del run
        times: dict[str, list[float]] = {"position": [], "replay": []}
        equal = True
        for _ in range(args.repeats):
            t = time.perf_counter()
            got = DataPosition(dcfg.num_workers, state).take(next(iter(make_loader(dcfg, batch, resume=state))))
            times["position"].append(time.perf_counter() - t)
            equal &= all(torch.equal(got[k], want[k]) for k in want)
            if n <= args.replay_up_to:
                t = time.perf_counter()
                it = iter(make_loader(dcfg, batch))
                for _ in range(n):
                    next(it)
                next(it)
                times["replay"].append(time.perf_counter() - t)
                del it
        rep = f"{statistics.median(times['replay']):9.2f}" if times["replay"] else f"{'-':>9}"
        print(f"{n:6d} {statistics.median(times['position']):11.2f} {rep} {str(equal):>18}   "
              f"(reading {n} batches to get there: {reach:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
