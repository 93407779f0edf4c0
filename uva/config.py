"""Model configuration and the registry of named sizes (uva-tiny, uva-S, uva-B, uva-L, uva-H).

Everything shape-like is here: frames, action horizon and dimension, latent grid, patch size.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class UVAConfig:
    """Shapes and widths of a UVA model."""

    # data layout
    latent_channels: int = 16  # VAE latent channels
    latent_size: int = 16  # latent grid height = width
    patch_size: int = 1  # latent patch per token (token dim = channels * patch^2)
    num_views: int = 1  # cameras per frame, each a grid of tokens with a view embedding
    num_history: int = 4  # history frames given as context
    num_future: int = 4  # future frames predicted
    action_dim: int = 2  # action dimension of the robot
    action_horizon: int = 16  # actions per sample; a multiple of num_future
    proprio_dim: int = 0  # proprioception per history frame, added to the buffer tokens (0 = none)
    lang_dim: int = 0  # size of an instruction's token vectors (0 = no language input)
    lang_tokens: int = 16  # instruction tokens, each a prefix token of the sequence
    lang_dropout: float = 0.1  # training: share of samples whose instruction is hidden (runs without one too)
    text_encoder: dict = field(default_factory=dict)  # {spec, identity, dim} of what made the embeddings
    embodiments: list[str] = field(default_factory=list)  # robot names with a learned embodiment
    # vector each (added to the buffer tokens); id = position in the list; empty = none
    # backbone
    width: int = 768  # encoder width
    decoder_width: int = 768  # decoder width
    encoder_depth: int = 12
    decoder_depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    num_buffer_tokens: int = 4  # learned prefix tokens (MAR's class/buffer tokens)
    grad_checkpointing: bool = False  # recompute blocks in backward to save memory
    action_readout_dim: int = 8  # channels each future token keeps for the action condition
    # (spatial readout, where things are in the frame survives); 0 = mean over each frame's tokens
    # "chunk": one condition for the whole action chunk, which the action head denoises as one
    # vector; "per_action": each future frame's grid through a 3x3 conv, pooled to 4x4 and an MLP,
    # mapped over time to one condition per action, each action denoised on its own condition
    action_cond: str = "chunk"
    # diffusion heads
    head_width: int = 1024
    head_depth: int = 6
    action_head_width: int = 1024
    action_head_depth: int = 6
    diffusion_steps: int = 1000  # training steps of the cosine schedule
    diffusion_batch_mul: int = 4  # noise draws per video token in one training step (MAR)
    # noise draws per action chunk in one training step: the action head is a small MLP on one
    # condition per sample, so many draws cost little beside the backbone pass and cut the
    # variance of what the head (and, through the condition, the backbone) learns per step;
    # 0 = diffusion_batch_mul
    action_batch_mul: int = 0
    action_clip: float = 5.0  # sampling bounds predicted normalized actions (x0) to +-this; 0 = off
    video_clip: float = 10.0  # sampling bounds predicted (scaled) latent tokens to +-this; 0 = off
    dropout: float = 0.0  # training dropout after attention and in the MLP of every block
    # masked training
    mask_ratio_min: float = 0.7  # truncated normal on [min, 1] centred at 1
    mask_ratio_std: float = 0.25
    # "token": each future token masked on its own; "tube": one spatial mask (per view grid)
    # repeated over the future frames, so a location cannot be copied from another future frame
    mask_kind: str = "token"
    # "latent": the mask token is a vector in latent-token space, projected by `fuse` like real
    # tokens; "width": a learned vector in width space added after the projection (the masked
    # token's latent part is zero), which no real token's projection can equal
    mask_token_space: str = "latent"
    # --- layout options (the defaults are this project's model; the UVA reference code and MAR
    # are other settings of them, see pipeline/weights.py) ---
    mlp_act: str = "gelu_tanh"  # the blocks' MLP activation: "gelu_tanh" or "gelu" (exact; timm, MAR)
    # "fused": one linear map of [future token, every history frame, the frame's actions];
    # "streams": each stream projected to width on its own (future tokens by z_proj, the history
    # frame of the same index by z_proj_cond, each action by action_proj over its own run of
    # L / action_horizon tokens), a masked token or hidden action replaced by a learned
    # width vector, then the three fused (the UVA reference's layout; needs num_history == num_future)
    embed_style: str = "fused"
    embed_norm: bool = False  # LayerNorm over the whole input sequence before the encoder (MAR's z_proj_ln)
    action_pos: bool = False  # the action condition reads the decoder features with the video
    # position embedding added (the reference adds it before both heads)
    action_prefix: bool = True  # the prefix tokens' mean is added to the action condition
    lang_skip: bool = True  # the instruction also reaches the action condition through a linear map
    inverse_sees_history: bool = True  # inverse dynamics sees the history frames (the reference
    # hides them: its inverse mode reads the future frames alone)

    @property
    def grid(self) -> int:
        return self.latent_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one time step: every view's grid."""
        return self.num_views * self.tokens_per_frame

    @property
    def token_dim(self) -> int:
        return self.latent_channels * self.patch_size**2

    @property
    def actions_per_frame(self) -> int:
        return self.action_horizon // self.num_future

    def validate(self) -> None:
        positive = ("latent_channels", "latent_size", "patch_size", "num_views", "num_history", "num_future",
                    "action_dim", "action_horizon", "width", "decoder_width", "encoder_depth",
                    "decoder_depth", "num_heads", "head_width", "head_depth", "action_head_width",
                    "action_head_depth", "diffusion_steps", "diffusion_batch_mul")
        for key in positive:
            if getattr(self, key) <= 0:
                raise ValueError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.latent_size % self.patch_size:
            raise ValueError(f"model.latent_size={self.latent_size} is not a multiple of patch_size={self.patch_size}")
        if self.action_horizon % self.num_future:
            raise ValueError(f"model.action_horizon={self.action_horizon} is not a multiple of num_future={self.num_future}")
        for key in ("width", "decoder_width"):
            if getattr(self, key) % self.num_heads:
                raise ValueError(f"model.{key}={getattr(self, key)} is not a multiple of num_heads={self.num_heads}")
        if self.mask_kind not in ("token", "tube"):
            raise ValueError(f"model.mask_kind must be 'token' or 'tube', got {self.mask_kind!r}")
        if self.action_cond not in ("chunk", "per_action"):
            raise ValueError(f"model.action_cond must be 'chunk' or 'per_action', got {self.action_cond!r}")
        if self.mlp_act not in ("gelu_tanh", "gelu"):
            raise ValueError(f"model.mlp_act must be 'gelu_tanh' or 'gelu', got {self.mlp_act!r}")
        if self.embed_style not in ("fused", "streams"):
            raise ValueError(f"model.embed_style must be 'fused' or 'streams', got {self.embed_style!r}")
        if self.embed_style == "streams":
            if self.num_history != self.num_future:
                raise ValueError(f"model.embed_style=streams pairs each future frame with a history frame: "
                                 f"num_history={self.num_history} must equal num_future={self.num_future}")
            if (self.num_future * self.tokens_per_step) % self.action_horizon:
                raise ValueError(f"model.embed_style=streams spreads each action over its own run of tokens: "
                                 f"{self.num_future * self.tokens_per_step} tokens are not a multiple of "
                                 f"action_horizon={self.action_horizon}")
        if self.mask_token_space not in ("latent", "width"):
            raise ValueError(f"model.mask_token_space must be 'latent' or 'width', got {self.mask_token_space!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.mask_ratio_min <= 1.0:
            raise ValueError(f"model.mask_ratio_min={self.mask_ratio_min} must be in (0, 1]")
        if self.action_batch_mul < 0:
            raise ValueError(f"model.action_batch_mul must be >= 0 (0 = diffusion_batch_mul), got {self.action_batch_mul}")
        if min(self.proprio_dim, self.lang_dim, self.num_buffer_tokens, self.action_readout_dim) < 0:
            raise ValueError("model.proprio_dim, lang_dim, num_buffer_tokens and action_readout_dim must be >= 0")
        if self.lang_dim and self.lang_tokens < 1:
            raise ValueError(f"model.lang_tokens must be >= 1 with language, got {self.lang_tokens}")
        if not 0.0 <= self.lang_dropout <= 1.0:
            raise ValueError(f"model.lang_dropout must be in [0, 1], got {self.lang_dropout}")
        if len(set(self.embodiments)) != len(self.embodiments):
            raise ValueError(f"model.embodiments must be unique names, got {self.embodiments}")
        if self.embodiments and not self.num_buffer_tokens:
            raise ValueError("model.embodiments needs num_buffer_tokens >= 1 (the embodiment enters through "
                             "the buffer tokens)")
        if self.proprio_dim and not self.num_buffer_tokens:
            raise ValueError("model.proprio_dim > 0 needs num_buffer_tokens >= 1 (proprioception enters "
                             "through the buffer tokens)")


def _size(width, depth, heads, head_width, head_depth, **kw) -> UVAConfig:
    return UVAConfig(width=width, decoder_width=width, encoder_depth=depth, decoder_depth=depth,
                     num_heads=heads, head_width=head_width, head_depth=head_depth,
                     action_head_width=head_width, action_head_depth=head_depth, **kw)


MODEL_SIZES: dict[str, UVAConfig] = {
    "uva-tiny": _size(32, 2, 2, 32, 2, latent_size=8, num_buffer_tokens=1, num_history=2,
                      num_future=2, action_horizon=4, diffusion_batch_mul=2),
    "uva-S": _size(512, 8, 8, 768, 4),
    "uva-B": _size(768, 12, 12, 1024, 6),  # MAR-B
    "uva-L": _size(1024, 16, 16, 1280, 8),  # MAR-L
    "uva-H": _size(1280, 20, 16, 1536, 12),  # MAR-H
}


def model_config(name: str, **overrides) -> UVAConfig:
    """A named size with field overrides (e.g. the data layout of a dataset)."""
    if name not in MODEL_SIZES:
        raise ValueError(f"unknown model size '{name}', expected one of {sorted(MODEL_SIZES)}")
    unknown = set(overrides) - set(UVAConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown model config key '{sorted(unknown)[0]}'")
    cfg = replace(MODEL_SIZES[name], **overrides)
    cfg.validate()
    return cfg
