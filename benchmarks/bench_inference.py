"""Policy latency: ``predict_action`` at batch 1 (median after warm-up) per size and step count.

    python benchmarks/bench_inference.py [--sizes uva-tiny uva-B] [--steps 100 16 8] [--runs 10]

On CUDA it measures fp32 and bf16 autocast; on CPU fp32. uva-B uses the reference layout
(4 history + 4 future frames, 16x16x16 latents, 16 actions).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from uva import UVA, count_parameters, model_config


def measure(model: UVA, steps: int, runs: int, device: str, dtype: torch.dtype | None) -> float:
    c = model.cfg
    hist = torch.randn(1, c.num_history, c.latent_channels, c.latent_size, c.latent_size, device=device)
    times = []
    for i in range(runs + 2):  # two warm-up calls
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            model.predict_action(hist, num_steps=steps)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["uva-tiny", "uva-B"])
    p.add_argument("--steps", nargs="+", type=int, default=[100, 16, 8])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--cpu-runs-large", type=int, default=3, help="runs for models over 100M params on CPU")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or 'cpu'} x{torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")
    dtypes = [("fp32", None)] + ([("bf16", torch.bfloat16)] if device == "cuda" else [])
    print(f"{'size':10} {'params':>8} {'dtype':5} {'steps':>5} {'median ms':>10}")
    for size in args.sizes:
        torch.manual_seed(0)
        model = UVA(model_config(size)).to(device).eval()
        params = count_parameters(model)["total"] / 1e6
        runs = args.runs if device == "cuda" or params < 100 else args.cpu_runs_large
        for label, dtype in dtypes:
            for steps in args.steps:
                ms = measure(model, steps, runs, device, dtype)
                print(f"{size:10} {params:7.1f}M {label:5} {steps:5d} {ms:10.2f}", flush=True)


if __name__ == "__main__":
    main()
