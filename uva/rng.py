"""Random numbers: one rule on every device.

A generator draws on its own device. Every function that draws takes ``generator`` and the
``device`` of the tensor it makes, and the two must agree: a CPU generator cannot drive a CUDA
draw (PyTorch refuses), and drawing on the host then copying would put a copy and a sync into
every sampling step and keep the loop out of a CUDA graph. Make generators with
``generator(seed, device)``; ``None`` uses the device's default generator.

The same seed on the same device gives the same numbers; the CPU and CUDA streams differ, so a
run is reproducible on the device kind it ran on.
"""

from __future__ import annotations

import torch


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on ``device`` (its index included) seeded with ``seed``."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


def same_device(a: torch.device, b: torch.device) -> bool:
    """Same device type, and the same index where both name one (``cuda`` matches ``cuda:0``)."""
    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def check(gen: torch.Generator | None, device: str | torch.device) -> None:
    """Refuse a generator that lives on another device than the draw."""
    if gen is not None and not same_device(gen.device, device):
        raise ValueError(f"a generator on {gen.device} cannot draw on {torch.device(device)}: make it on "
                         f"the device of the tensors it draws for (uva.rng.generator(seed, device))")


def randn(shape, gen: torch.Generator | None, device: str | torch.device) -> torch.Tensor:
    """Standard normal float32 of ``shape`` on ``device``."""
    check(gen, device)
    return torch.randn(tuple(shape), generator=gen, device=device)


def rand(shape, gen: torch.Generator | None, device: str | torch.device) -> torch.Tensor:
    """Uniform [0, 1) float32 of ``shape`` on ``device``."""
    check(gen, device)
    return torch.rand(tuple(shape), generator=gen, device=device)


def randint(high: int, shape, gen: torch.Generator | None, device: str | torch.device) -> torch.Tensor:
    """Integers in [0, high) of ``shape`` on ``device``."""
    check(gen, device)
    return torch.randint(0, high, tuple(shape), generator=gen, device=device)


def multinomial(weights: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """One index per row of ``weights`` (B, K), on the weights' device."""
    check(gen, weights.device)
    return torch.multinomial(weights, 1, generator=gen).squeeze(-1)
