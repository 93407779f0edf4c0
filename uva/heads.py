"""Lightweight diffusion heads: an MLP with AdaLN residual blocks (MAR's diffusion MLP).

The same network serves both heads: the video head denoises one latent token conditioned on
its decoder output; the action head denoises a whole action chunk conditioned on pooled
decoder features. Output = [epsilon, variance interpolation] (2 x target size).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], -1) if dim % 2 else emb


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class AdaLNBlock(nn.Module):
    """Residual MLP block whose LayerNorm shift/scale/gate come from the condition."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(c).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class DiffusionMLP(nn.Module):
    """Denoiser eps(x_t, t | cond): (B, D) x (B,) x (B, C) -> (B, 2D)."""

    def __init__(self, target_dim: int, cond_dim: int, width: int, depth: int):
        super().__init__()
        self.target_dim = target_dim
        self.input_proj = nn.Linear(target_dim, width)
        self.time_embed = nn.Sequential(nn.Linear(256, width), nn.SiLU(), nn.Linear(width, width))
        self.cond_embed = nn.Linear(cond_dim, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, 2 * target_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # zero-init the modulation gates and the output so every block starts as identity
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        for layer in (self.final_ada[-1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Inputs are cast to the parameters' dtype (bf16 weights train on float32 targets);
        under autocast the matmuls run in the autocast dtype."""
        dtype = self.input_proj.weight.dtype
        c = self.time_embed(timestep_embedding(t, 256).to(dtype)) + self.cond_embed(cond.to(dtype))  # (B, W)
        h = self.input_proj(x.to(dtype))
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        return self.out(modulate(self.final_norm(h), shift, scale))
