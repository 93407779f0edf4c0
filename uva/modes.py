"""The five masked-training modes and their per-sample masks.

Each sample of a batch draws its own mode (weights from the config); action-free samples
(human video) can only draw modes that need no actions. A mode fixes which future tokens are
masked, whether the actions are visible, and which losses the sample contributes to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Mode:
    """What one masked-training mode hides and what it learns."""

    name: str
    future: str  # "all" masked, "ratio" (random ratio) masked, or "none" masked
    actions_visible: bool
    video_loss: bool
    action_loss: bool

    @property
    def needs_actions(self) -> bool:
        return self.actions_visible or self.action_loss


MODES: tuple[Mode, ...] = (
    Mode("policy", "all", False, False, True),
    Mode("video", "ratio", False, True, False),
    Mode("forward_dynamics", "ratio", True, True, False),
    Mode("inverse_dynamics", "none", False, False, True),
    Mode("joint", "ratio", False, True, True),
)
MODE_NAMES = tuple(m.name for m in MODES)
MODE_INDEX = {m.name: i for i, m in enumerate(MODES)}


def mode_weights_tensor(weights: dict[str, float]) -> torch.Tensor:
    """Weights by name -> (num_modes,) tensor; unknown names are errors."""
    unknown = set(weights) - set(MODE_NAMES)
    if unknown:
        raise ValueError(f"unknown training mode '{sorted(unknown)[0]}', expected {MODE_NAMES}")
    w = torch.tensor([float(weights.get(n, 0.0)) for n in MODE_NAMES])
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"mode weights must be >= 0 with a positive sum, got {weights}")
    return w


def sample_modes(weights: torch.Tensor, has_actions: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mode index per sample (B,); samples without actions only draw action-free modes."""
    b = has_actions.shape[0]
    needs = torch.tensor([m.needs_actions for m in MODES])
    w = weights.float().expand(b, -1).clone()
    w[~has_actions.cpu().bool()] *= (~needs).float()
    no_choice = w.sum(-1) <= 0
    w[no_choice, MODE_INDEX["video"]] = 1.0  # action-free sample whose config allows no video mode
    return torch.multinomial(w, 1, generator=generator).squeeze(-1).to(has_actions.device)


def truncated_normal_ratio(b: int, low: float, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask ratios (B,) ~ N(1, std) truncated to [low, 1] (inverse-CDF sampling)."""
    normal = torch.distributions.Normal(0.0, 1.0)
    a, c = normal.cdf(torch.tensor((low - 1.0) / std)), normal.cdf(torch.tensor(0.0))
    u = torch.rand(b, generator=generator) * (c - a) + a
    return (1.0 + std * normal.icdf(u.clamp(1e-6, 1 - 1e-6))).clamp(low, 1.0)


def build_masks(mode_idx: torch.Tensor, num_tokens: int, low: float, std: float,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per-sample masks for a batch of modes.

    Returns future_mask (B, L) bool (True = masked), actions_visible (B,), video_loss (B,),
    action_loss (B,) as float weights.
    """
    b = mode_idx.shape[0]
    device = mode_idx.device
    kinds = [MODES[i].future for i in mode_idx.tolist()]
    ratio = truncated_normal_ratio(b, low, std, generator)
    ratio = torch.tensor([1.0 if k == "all" else 0.0 if k == "none" else float(r) for k, r in zip(kinds, ratio)])
    num_masked = (ratio * num_tokens).ceil().long().clamp(0, num_tokens)
    ratio_rows = torch.tensor([k == "ratio" for k in kinds])
    num_masked[ratio_rows] = num_masked[ratio_rows].clamp(min=1)  # a video loss needs a target
    order = torch.rand(b, num_tokens, generator=generator).argsort(-1)
    ranks = order.argsort(-1)
    future_mask = ranks < num_masked[:, None]
    table = torch.tensor([[m.actions_visible, m.video_loss, m.action_loss] for m in MODES], dtype=torch.float32)
    flags = table[mode_idx.cpu()]
    return {"future_mask": future_mask.to(device), "actions_visible": flags[:, 0].bool().to(device),
            "video_loss": flags[:, 1].to(device), "action_loss": flags[:, 2].to(device)}
