"""KL autoencoder that turns frames into latent grids (LDM / MAR "kl16" layout).

The parameter names follow the LDM KL-VAE exactly (``encoder.down.0.block.0.conv1.weight``,
``quant_conv``, ``post_quant_conv``...), so a MAR kl16 checkpoint loads with ``load_state_dict``.
Smaller variants share the same code with fewer channels and levels for CPU work.

Frames enter as (B, 3, H, W) in [-1, 1]; latents leave as (B, C, H/s, W/s) already multiplied
by ``config.scale`` (0.2325 for kl16), which is the space the UVA model works in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class VAEConfig:
    """Shape of a KL autoencoder; ``stride`` = 2 ** (len(ch_mult) - 1)."""

    ch: int = 128  # base channel count
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)  # channel multiplier per resolution level
    num_res_blocks: int = 2  # residual blocks per encoder level (decoder uses one more)
    z_channels: int = 16  # latent channels
    attn_resolutions: tuple[int, ...] = (16,)  # encoder feature sizes that get self-attention
    resolution: int = 256  # nominal input size; only used to place attention blocks
    scale: float = 0.2325  # latents are multiplied by this before the model sees them
    num_groups: int = 32  # GroupNorm groups

    def validate(self) -> None:
        if self.ch <= 0 or self.ch % self.num_groups:
            raise ValueError(f"vae.ch={self.ch} must be a positive multiple of num_groups={self.num_groups}")
        if not self.ch_mult:
            raise ValueError("vae.ch_mult must not be empty")
        if self.z_channels <= 0 or self.num_res_blocks <= 0:
            raise ValueError("vae.z_channels and vae.num_res_blocks must be positive")
        if self.scale <= 0:
            raise ValueError(f"vae.scale={self.scale} must be positive")


VAE_PRESETS: dict[str, VAEConfig] = {
    # MAR's kl16: 256x256 -> 16x16x16.
    "kl16": VAEConfig(),
    # CPU-sized variants trained by preprocessing/train_vae.py.
    "kl8-small": VAEConfig(ch=16, ch_mult=(1, 2, 4, 4), num_res_blocks=1, z_channels=16,
                           attn_resolutions=(), resolution=96, scale=1.0, num_groups=8),
    "kl16-small": VAEConfig(ch=32, ch_mult=(1, 2, 2, 4, 4), num_res_blocks=1, z_channels=16,
                            attn_resolutions=(), resolution=256, scale=1.0, num_groups=16),
}


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels, eps=1e-6)


class ResnetBlock(nn.Module):
    """Pre-norm residual conv block (GroupNorm, swish, 3x3 conv) x 2."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv projections."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (p(y).flatten(2).transpose(1, 2) for p in (self.q, self.k, self.v))  # (B, HW, C)
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(y.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 conv with LDM's asymmetric (right/bottom) padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2 upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _mid(channels: int, groups: int) -> nn.Module:
    mid = nn.Module()
    mid.block_1 = ResnetBlock(channels, channels, groups)
    mid.attn_1 = AttnBlock(channels, groups)
    mid.block_2 = ResnetBlock(channels, channels, groups)
    return mid


class Encoder(nn.Module):
    """Image (B, 3, H, W) -> latent moments (B, 2*z, H/s, W/s)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        g = cfg.num_groups
        self.conv_in = nn.Conv2d(3, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin, res = cfg.ch, cfg.resolution
        for level, mult in enumerate(cfg.ch_mult):
            cout = cfg.ch * mult
            stage = nn.Module()
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                stage.block.append(ResnetBlock(cin, cout, g))
                cin = cout
                if res in cfg.attn_resolutions:
                    stage.attn.append(AttnBlock(cin, g))
            if level != len(cfg.ch_mult) - 1:
                stage.downsample = Downsample(cin)
                res //= 2
            self.down.append(stage)
        self.mid = _mid(cin, g)
        self.norm_out = _norm(cin, g)
        self.conv_out = nn.Conv2d(cin, 2 * cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent (B, z, h, w) -> image (B, 3, h*s, w*s)."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        g = cfg.num_groups
        cin = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = _mid(cin, g)
        stages = []
        for level in reversed(range(len(cfg.ch_mult))):
            cout = cfg.ch * cfg.ch_mult[level]
            stage = nn.Module()
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()  # LDM's decoder has no attention here; kept for key layout
            for _ in range(cfg.num_res_blocks + 1):
                stage.block.append(ResnetBlock(cin, cout, g))
                cin = cout
            if level != 0:
                stage.upsample = Upsample(cin)
            stages.insert(0, stage)  # up[0] is the finest level, as in LDM checkpoints
        self.up = nn.ModuleList(stages)
        self.norm_out = _norm(cin, g)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for stage in reversed(self.up):
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    """Frozen-at-use KL-VAE: ``encode`` to scaled latents, ``decode`` back to [-1, 1] pixels."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, unscaled: each (B, z, H/s, W/s)."""
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Pixels (B, 3, H, W) in [-1, 1] -> scaled latents (B, z, H/s, W/s)."""
        mean, logvar = self.moments(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean
        return z * self.config.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, z, h, w) -> pixels (B, 3, h*s, w*s), roughly in [-1, 1]."""
        return self.decoder(self.post_quant_conv(z / self.config.scale))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass: (reconstruction, posterior mean, posterior logvar)."""
        mean, logvar = self.moments(x)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        return self.decoder(self.post_quant_conv(z)), mean, logvar


def vae_identity(model: AutoencoderKL) -> str:
    """Stable hash of a VAE's config and weights; latents from different VAEs never mix."""
    h = hashlib.sha256(json.dumps(asdict(model.config), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
