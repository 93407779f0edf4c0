"""Training throughput per ZeRO stage: samples/s, data-wait fraction, peak memory per rank.

    python benchmarks/bench_train.py [--stages 0 1 2 3] [--nproc 2] [--steps 60] [--data runs/default/latents]

Runs the real entry point (torchrun, DeepSpeed; gloo + fp32 on CPU, bf16 on GPU) on the
embedded default's latent shards (run scripts/run_default.sh first) with the default model
config, and averages the logged samples/s and MFU after the first logging window (warm-up).
On one GPU at uva-B: ``--nproc 1 --stages 2 --set model.size=uva-B --set micro_batch_size=64
--set "model.overrides={latent_channels: 16, latent_size: 12, patch_size: 2}"``; --data may
also name one shard set, e.g. the one benchmarks/gpu_check.py leaves in /tmp/uva_gpu_check/latents.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stages", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--config", default=str(ROOT / "configs/pretrain/default.yaml"))
    p.add_argument("--data", default=str(ROOT / "runs/default/latents"))
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    data = Path(args.data)
    if (data / "index.json").is_file():  # one shard set
        sources = f"data.sources=[{{path: {data}}}]"
    elif (data / "robot" / "index.json").is_file():
        sources = f"data.sources=[{{path: {data / 'robot'}, weight: 3}}, {{path: {data / 'human'}, weight: 1}}]"
    else:
        sys.exit(f"no shard sets under {data}: run scripts/run_default.sh first (or pass --data)")
    print(f"{'ZeRO':>4} {'ranks':>5} {'samples/s':>10} {'data wait':>10} {'MFU':>6} {'peak MB/rank':>13}")
    for stage in args.stages:
        work = Path(tempfile.mkdtemp(prefix=f"bench_train_z{stage}_"))
        sets = [f"zero_stage={stage}", f"total_steps={args.steps}", f"checkpoint_every={10 * args.steps}",
                "log_every=10", "eval_every=0", f"run_dir={work}",
                sources,
                *args.set]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               "-m", "pipeline.train", "--config", args.config, *[a for s in sets for a in ("--set", s)],
               "--losses-out", str(work / "result")]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // args.nproc))}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stdout[-3000:] + proc.stderr[-3000:])
        results = [json.loads(Path(f"{work / 'result'}.rank{r}").read_text()) for r in range(args.nproc)]
        hist = results[0]["throughput"][1:] or results[0]["throughput"]
        sps = sum(h["samples_per_s"] for h in hist) / len(hist)
        wait = sum(h["data_wait_frac"] for h in hist) / len(hist)
        peak = max(r["peak_memory_mb"] for r in results)
        mfus = [h["mfu"] for h in hist if h.get("mfu") is not None]
        mfu = f"{sum(mfus) / len(mfus):.1%}" if mfus else "n/a"
        print(f"{stage:>4} {args.nproc:>5} {sps:>10.1f} {wait:>10.1%} {mfu:>6} {peak:>10.0f} ({results[0]['memory_kind']})",
              flush=True)


if __name__ == "__main__":
    main()
