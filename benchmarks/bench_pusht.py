"""PushT figures: expert and random policy under the evaluation protocol, expert demos per minute.

    python benchmarks/bench_pusht.py --workers 2 --demos 60
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from preprocessing import make_pusht_demos
from uva_sim.pusht.runner import TEST_SEEDS, evaluate_policy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--demos", type=int, default=60, help="demo episodes to generate for the throughput figure")
    args = p.parse_args()
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} cpus={os.cpu_count()} workers={args.workers}")
    for name in ("expert", "random"):
        r = evaluate_policy(name, TEST_SEEDS, workers=args.workers, log=None)
        fails = [e["seed"] for e in r["episodes"] if not e["success"]]
        print(f"{name}: score {r['score']:.4f} success rate {r['success_rate']:.3f} over {r['num_episodes']} seeds, "
              f"mean steps {r['mean_steps']:.1f}, wall {r['seconds']:.1f} s, failed seeds {fails}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        s = make_pusht_demos.run(["--output", tmp, "--num-episodes", str(args.demos), "--workers", str(args.workers)])
        wall = time.time() - t0
    print(f"demos: kept {s['kept']} of {s['attempted']} (dropped {s['dropped']}) in {wall:.1f} s -> "
          f"{s['kept'] / wall * 60:.1f} demos/min with {args.workers} workers")


if __name__ == "__main__":
    main()
