"""MAR-style encoder-decoder transformer over the joint video-action tokens.

Pre-norm ViT blocks with PyTorch SDPA attention. The encoder sees every token (masked
positions carry the mask token, as in the UVA reference: no token dropping); the decoder
re-embeds at its own width with fresh position embeddings.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


class Attention(nn.Module):
    """Multi-head self-attention through scaled_dot_product_attention."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, heads, N, C/heads)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: attention + GELU MLP."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, dropout: float = 0.0, act: str = "gelu_tanh"):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, num_heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        hidden = int(width * mlp_ratio)
        # dropout after the attention and inside/after the MLP (timm ViT's proj_drop and mlp drop);
        # the activation and its dropout share index 1, so the parameter names stay mlp.0 / mlp.2
        act = nn.Sequential(nn.GELU(approximate="tanh" if act == "gelu_tanh" else "none"), nn.Dropout(dropout))
        self.mlp = nn.Sequential(nn.Linear(width, hidden), act, nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class Stack(nn.Module):
    """A sequence of blocks with an optional activation-checkpointing switch."""

    def __init__(self, depth: int, width: int, num_heads: int, mlp_ratio: float, dropout: float = 0.0,
                 act: str = "gelu_tanh"):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, num_heads, mlp_ratio, dropout, act) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm(x)


class EncoderDecoder(nn.Module):
    """Tokens (B, L, width) -> decoder features (B, L, decoder_width)."""

    def __init__(self, num_tokens: int, width: int, decoder_width: int, encoder_depth: int,
                 decoder_depth: int, num_heads: int, mlp_ratio: float, dropout: float = 0.0,
                 act: str = "gelu_tanh"):
        super().__init__()
        self.encoder = Stack(encoder_depth, width, num_heads, mlp_ratio, dropout, act)
        self.decoder_embed = nn.Linear(width, decoder_width)
        self.decoder_pos = nn.Parameter(torch.zeros(1, num_tokens, decoder_width))
        self.decoder = Stack(decoder_depth, decoder_width, num_heads, mlp_ratio, dropout, act)
        nn.init.normal_(self.decoder_pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(x)
        return self.decoder(self.decoder_embed(x) + self.decoder_pos)
