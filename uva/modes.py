"""The five masked-training modes and their per-sample masks.

Each sample of a batch draws its own mode (weights from the config); action-free samples
(human video) can only draw modes that need no actions. A mode fixes which future tokens are
masked, whether the actions are visible, and which losses the sample contributes to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uva import rng


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
    """Mode index per sample (B,) on ``has_actions``' device; samples without actions only draw
    action-free modes."""
    b, device = has_actions.shape[0], has_actions.device
    needs = torch.tensor([m.needs_actions for m in MODES], device=device)
    w = weights.to(device).float().expand(b, -1)
    w = torch.where(has_actions.bool()[:, None] | ~needs, w, torch.zeros((), device=device))
    video = torch.arange(len(MODES), device=device) == MODE_INDEX["video"]
    no_choice = w.sum(-1, keepdim=True) <= 0  # action-free sample whose config allows no video mode
    w = torch.where(no_choice & video, torch.ones((), device=device), w)
    return rng.multinomial(w, generator)


def truncated_normal_ratio(b: int, low: float, std: float, generator: torch.Generator | None = None,
                           device: str | torch.device = "cpu") -> torch.Tensor:
    """Mask ratios (B,) ~ N(1, std) truncated to [low, 1] (inverse-CDF sampling) on ``device``."""
    # validate_args=False: argument checks would read values back to the host (a GPU sync)
    normal = torch.distributions.Normal(torch.zeros((), device=device), torch.ones((), device=device),
                                        validate_args=False)
    a = normal.cdf(torch.tensor((low - 1.0) / std, device=device))
    c = normal.cdf(torch.zeros((), device=device))
    u = rng.rand((b,), generator, device) * (c - a) + a
    return (1.0 + std * normal.icdf(u.clamp(1e-6, 1 - 1e-6))).clamp(low, 1.0)


_FUTURE_KIND = {"all": 0, "ratio": 1, "none": 2}


def build_masks(mode_idx: torch.Tensor, num_tokens: int, low: float, std: float,
                generator: torch.Generator | None = None, tube_frames: int = 1) -> dict[str, torch.Tensor]:
    """Per-sample masks for a batch of modes, drawn on ``mode_idx``'s device.

    ``tube_frames`` > 1: the L tokens are that many frames of L / tube_frames positions, and one
    mask of the positions is repeated over the frames (tube masking).

    Returns future_mask (B, L) bool (True = masked), actions_visible (B,), video_loss (B,),
    action_loss (B,) as float weights.
    """
    if num_tokens % tube_frames:
        raise ValueError(f"{num_tokens} tokens are not {tube_frames} frames of equal size")
    frames, num_tokens = tube_frames, num_tokens // tube_frames
    b, device = mode_idx.shape[0], mode_idx.device
    kind = torch.tensor([_FUTURE_KIND[m.future] for m in MODES], device=device)[mode_idx]
    ratio = truncated_normal_ratio(b, low, std, generator, device)
    ratio = torch.where(kind == _FUTURE_KIND["all"], 1.0, torch.where(kind == _FUTURE_KIND["none"], 0.0, ratio))
    num_masked = (ratio * num_tokens).ceil().long().clamp(0, num_tokens)
    # a video loss needs a target: a ratio row masks at least one token
    num_masked = torch.where(kind == _FUTURE_KIND["ratio"], num_masked.clamp(min=1), num_masked)
    ranks = rng.rand((b, num_tokens), generator, device).argsort(-1).argsort(-1)
    future_mask = (ranks < num_masked[:, None]).repeat(1, frames)
    table = torch.tensor([[m.actions_visible, m.video_loss, m.action_loss] for m in MODES],
                         dtype=torch.float32, device=device)
    flags = table[mode_idx]
    return {"future_mask": future_mask, "actions_visible": flags[:, 0].bool(),
            "video_loss": flags[:, 1], "action_loss": flags[:, 2]}
