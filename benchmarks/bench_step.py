"""Where a CPU training step of the embedded default's model goes: ms per step for variants of
the step, alternated, medians.

    python benchmarks/bench_step.py [--repeats 3] [--steps 12] [--threads 2]

The model is the one the embedded default pretrains and fine-tunes on PushT (size and overrides
from configs/pretrain/default.yaml, its window; two view slots, the second absent as in PushT;
8-d padded actions; the fine-tune's action noise draws from configs/finetune/default.yaml), one
process, the recipe's micro-batch (16), random latents, the pusht_default recipe's mode weights, AdamW. Variants:
``default``; ``abm1`` (1 action noise draw instead of the fine-tune's 64); ``dbm1`` (1 video noise
draw per token instead of 4); ``silu`` (the blocks' GELU-tanh replaced by SiLU: a different model,
timed only, its quality unmeasured). Each repeat runs every variant once, in turn, so a shared
machine's drift falls on all of them alike. Wall-clock differences, not torch.profiler's shares:
on this model the profiler books GELU at ~30% of the step, five times what timing it shows.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

from uva.config import model_config
from uva.model import UVA
from uva.modes import MODE_NAMES
from uva_io.config import read_yaml

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("default", "abm1", "dbm1", "silu")


def default_config(**extra):
    """The fine-tuned model's config, the recipe's mode weights (in MODE_NAMES order) and its
    micro-batch size."""
    pre = read_yaml(ROOT / "configs/pretrain/default.yaml")
    fine = read_yaml(ROOT / "configs/finetune/pusht_default.yaml")["train"]  # with its defaults merged
    win = pre["data"]["window"]
    kw = dict(pre["model"].get("overrides", {}), num_history=win["num_history"], num_future=win["num_future"],
              action_horizon=win["action_horizon"], action_dim=pre["data"]["action_dim"],
              num_views=pre["data"]["num_views"], **fine["model"]["overrides"])
    kw.update(extra)
    weights = torch.tensor([float(fine["mode_weights"].get(m, 0.0)) for m in MODE_NAMES])
    return model_config(pre["model"]["size"], **kw), weights, fine["micro_batch_size"]


def build(variant: str):
    extra = {"abm1": {"action_batch_mul": 1}, "dbm1": {"diffusion_batch_mul": 1}}.get(variant, {})
    cfg, weights, batch_size = default_config(**extra)
    torch.manual_seed(0)
    model = UVA(cfg)
    if variant == "silu":
        for mod in model.modules():
            if isinstance(mod, nn.Sequential) and len(mod) == 2 and isinstance(mod[0], nn.GELU):
                mod[0] = nn.SiLU()
    c, g = cfg, torch.Generator().manual_seed(0)
    shape = (c.latent_channels, c.latent_size, c.latent_size)
    views = (c.num_views,) if c.num_views > 1 else ()
    batch = dict(history=torch.randn(batch_size, c.num_history, *views, *shape, generator=g),
                 future=torch.randn(batch_size, c.num_future, *views, *shape, generator=g),
                 actions=torch.randn(batch_size, c.action_horizon, c.action_dim, generator=g),
                 has_actions=torch.ones(batch_size, dtype=torch.bool), mode_weights=weights,
                 view_mask=torch.tensor([[True] + [False] * (c.num_views - 1)] * batch_size) if views else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        out = model(**batch, generator=g)
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, batch_size


def time_steps(step, n: int) -> float:
    for _ in range(2):  # warm-up
        step()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    for r in range(args.repeats):
        for v in args.variants:
            step, batch_size = build(v)
            times[v].append(time_steps(step, args.steps))
            print(f"repeat {r} {v:8s} {times[v][-1] * 1000:7.1f} ms/step", flush=True)
    base = statistics.median(times[args.variants[0]])
    print(f"\n{'variant':8s} {'ms/step':>8s} {'samples/s':>10s} {'vs ' + args.variants[0]:>12s}")
    for v in args.variants:
        m = statistics.median(times[v])
        print(f"{v:8s} {m * 1000:8.1f} {batch_size / m:10.1f} {m / base:12.3f}")


if __name__ == "__main__":
    main()
