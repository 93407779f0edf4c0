"""Exponential moving average of the weights, over each rank's own parameter storage.

Under ZeRO-3 a rank holds only its shard of every parameter (``ds_tensor``); the average is kept
of exactly that, so EMA memory is sharded like the model. ``swapped_in`` puts the averages into
the parameters for a moment (gathering them under ZeRO-3 for the consolidated weights).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def local_storage(p: torch.nn.Parameter) -> torch.Tensor:
    """The part of ``p`` this rank holds: its ZeRO-3 shard, or the whole tensor."""
    return p.ds_tensor if hasattr(p, "ds_tensor") else p.data


class EMA:
    """Shadow fp32 copies of the trainable parameters' local storage."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.shadow = [local_storage(p).detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Average in the weights after optimizer step ``step`` (1-based). The decay warms up as
        min(decay, (1 + step) / (10 + step)), so short runs are not dominated by the init."""
        decay = min(self.decay, (1 + step) / (10 + step))
        # one fused launch per group on a GPU instead of one per parameter
        torch._foreach_lerp_(self.shadow, [local_storage(p).float() for p in self.params], 1 - decay)

    def state(self) -> list[torch.Tensor]:
        return [s.cpu() for s in self.shadow]

    def load_state(self, shadow: list[torch.Tensor]) -> None:
        for s, v in zip(self.shadow, shadow):
            s.copy_(v)

    @contextmanager
    def swapped_in(self):
        """Within the block the parameters hold the averages; the trained weights come back after."""
        saved = [local_storage(p).detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                local_storage(p).copy_(s.to(local_storage(p).dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for p, old in zip(self.params, saved):
                    local_storage(p).copy_(old)
