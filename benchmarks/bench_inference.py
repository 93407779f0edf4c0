"""Policy latency: one action-chunk call at batch 1 (median after warm-up) per size, step count and path.

    python benchmarks/bench_inference.py [--sizes uva-tiny uva-B] [--steps 100 16 8] [--runs 10]
                                         [--backends eager graph compile]

Paths: "step" is ``UVA.predict_action`` step by step (fp32; on CUDA also with bf16 weights);
"eager", "graph" and "compile" are ``uva.sampler.ActionSampler`` (noise drawn up front, static
shapes; on CUDA with bf16 weights, "graph" recorded in a CUDA graph, "compile" through
torch.compile). Construction (capture, compilation) is timed apart from the calls. On the CPU
only "step" and "eager" run. uva-B uses the reference layout (4 history + 4 future frames,
16x16x16 latents, 16 actions).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch

from uva import UVA, count_parameters, model_config, rng
from uva.sampler import ActionSampler


def median_ms(fn, runs: int, cuda: bool, warmup: int = 2) -> float:
    """Median wall milliseconds of ``runs`` calls after ``warmup`` untimed ones (synchronized on CUDA)."""
    times = []
    for i in range(runs + warmup):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["uva-tiny", "uva-B"])
    p.add_argument("--steps", nargs="+", type=int, default=[100, 16, 8])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--backends", nargs="+", default=["eager", "graph", "compile"])
    p.add_argument("--cpu-runs-large", type=int, default=3, help="runs for models over 100M params on CPU")
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name() if cuda else f"{platform.processor() or 'cpu'} x{torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")
    backends = [b for b in args.backends if cuda or b == "eager"]
    print(f"{'size':10} {'params':>8} {'path':8} {'weights':7} {'steps':>5} {'median ms':>10} {'setup s':>8}")
    for size in args.sizes:
        torch.manual_seed(0)
        model = UVA(model_config(size)).to(device).eval()
        params = count_parameters(model)["total"] / 1e6
        runs = args.runs if cuda or params < 100 else args.cpu_runs_large
        c = model.cfg
        hist = torch.randn(1, c.num_history, c.latent_channels, c.latent_size, c.latent_size, device=device)
        gen = rng.generator(0, device)
        variants = [("fp32", model)] + ([("bf16", copy.deepcopy(model).to(torch.bfloat16))] if cuda else [])
        for steps in args.steps:
            for label, m in variants:
                ms = median_ms(lambda: m.predict_action(hist, num_steps=steps, generator=gen), runs, cuda)
                print(f"{size:10} {params:7.1f}M {'step':8} {label:7} {steps:5d} {ms:10.2f} {'':>8}", flush=True)
            label, m = variants[-1]
            for backend in backends:
                t = time.perf_counter()
                sampler = ActionSampler(m, steps, backend=backend)
                setup = time.perf_counter() - t
                ms = median_ms(lambda: sampler(hist, generator=gen), runs, cuda)
                print(f"{size:10} {params:7.1f}M {backend:8} {label:7} {steps:5d} {ms:10.2f} {setup:8.1f}", flush=True)
                sampler = None  # frees its graph and buffers before the next


if __name__ == "__main__":
    main()
