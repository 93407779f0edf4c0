"""The Unified Video Action model: joint video-action latent, masked encoder-decoder, two heads.

Shapes (B batch, Th/Tf history/future frames, V views, C latent channels, S latent size, p patch,
N = (S/p)^2 tokens per view, L = Tf * V * N, Dt = C p^2 token dim, H action horizon, A action dim):

    history  (B, Th, C, S, S)   scaled VAE latents of the context frames (one view), or
             (B, Th, V, C, S, S) with several views (cameras), each its own grid of tokens
    future   (B, Tf[, V], C, S, S) latents of the frames to predict (training / inverse dynamics)
    view_mask (B, V)            True where the episode has that camera; an absent view's tokens
                                are a learned "absent" vector and get no video loss
    actions  (B, H, A)          normalized action chunk, H/Tf actions per future frame
    action_mask (B, A)          True where a dimension is the robot's own (the rest is padding
                                of a narrower robot: no input, no loss)
    embodiment (B,)             index into cfg.embodiments (the robot of each sample)
    lang     (B, K, lang_dim)   token vectors of each sample's instruction (uva_io.text; K =
                                lang_tokens, zero rows = padding, all zero = no instruction). They
                                become prefix tokens; training hides the instruction for
                                lang_dropout of the samples, so the model also acts without one

Training: ``forward`` draws a masked-training mode per sample and returns the loss and its
parts. Inference: ``predict_action`` (one backbone pass, action head only: the policy never
samples video), ``generate_video`` (MaskGIT-style iterative unmasking), ``forward_dynamics``
and ``inverse_dynamics``. Every learned tensor lives in a submodule whose forward uses it, so
the model runs under ZeRO-3 parameter partitioning.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from einops import rearrange

from uva import rng
from uva.backbone import EncoderDecoder
from uva.config import UVAConfig
from uva.diffusion import GaussianDiffusion
from uva.heads import DiffusionMLP
from uva.modes import build_masks, sample_modes


class JointEmbed(nn.Module):
    """Fuse future token (or mask token), history tokens and action embedding per position."""

    def __init__(self, cfg: UVAConfig):
        super().__init__()
        self.cfg = cfg
        dt, w = cfg.token_dim, cfg.width
        self.streams = cfg.embed_style == "streams"
        if self.streams:  # each stream to width on its own, a masked one replaced in width space
            self.mask_token = nn.Parameter(torch.zeros(w))
            self.z_proj = nn.Linear(dt, w)
            self.z_proj_cond = nn.Linear(dt, w)
            self.action_proj = nn.Linear(cfg.action_dim, w)
            self.fuse = nn.Linear(3 * w, w)
        else:
            # a masked future token: a latent-space vector (fed through `fuse`) or a width-space one
            self.mask_token = nn.Parameter(torch.zeros(dt if cfg.mask_token_space == "latent" else w))
            self.action_proj = nn.Linear(cfg.actions_per_frame * cfg.action_dim, w)
            self.fuse = nn.Linear(dt + cfg.num_history * dt + w, w)
        self.action_mask = nn.Parameter(torch.zeros(w))
        self.time_pos = nn.Parameter(torch.zeros(1, cfg.num_future, 1, w))
        self.space_pos = nn.Parameter(torch.zeros(1, 1, cfg.tokens_per_frame, w))
        # several cameras: a view embedding per camera and the token of an absent one (none with
        # one view, so single-camera checkpoints keep their parameters)
        self.view_pos = nn.Parameter(torch.zeros(1, 1, cfg.num_views, 1, w)) if cfg.num_views > 1 else None
        self.absent = nn.Parameter(torch.zeros(w)) if cfg.num_views > 1 else None
        self.buffer = nn.Parameter(torch.zeros(1, cfg.num_buffer_tokens, w))
        self.proprio = nn.Linear(cfg.num_history * cfg.proprio_dim, w) if cfg.proprio_dim else None
        self.lang = nn.Linear(cfg.lang_dim, w) if cfg.lang_dim else None
        self.lang_pos = nn.Parameter(torch.zeros(1, cfg.lang_tokens, w)) if cfg.lang_dim else None
        self.embodiment = nn.Embedding(len(cfg.embodiments), w) if cfg.embodiments else None
        self.norm = nn.LayerNorm(w, eps=1e-6) if cfg.embed_norm else None
        if self.embodiment is not None:
            nn.init.normal_(self.embodiment.weight, std=0.02)
        for p in (self.mask_token, self.action_mask, self.time_pos, self.space_pos, self.buffer,
                  self.view_pos, self.absent, self.lang_pos):
            if p is not None:
                nn.init.normal_(p, std=0.02)

    @property
    def num_prefix(self) -> int:
        return self.cfg.num_buffer_tokens + (self.cfg.lang_tokens if self.lang is not None else 0)

    def forward(self, hist: torch.Tensor, fut: torch.Tensor, future_mask: torch.Tensor,
                actions: torch.Tensor | None, actions_visible: torch.Tensor,
                proprio: torch.Tensor | None = None, lang: torch.Tensor | None = None,
                embodiment: torch.Tensor | None = None, action_mask: torch.Tensor | None = None,
                view_mask: torch.Tensor | None = None, history_visible: torch.Tensor | None = None) -> torch.Tensor:
        """hist (B, Th, V*N, Dt), fut (B, Tf, V*N, Dt), future_mask (B, L) -> tokens (B, P + L, W).
        ``history_visible`` (B,) False: the history frames are hidden (the mask token in their place)."""
        cfg = self.cfg
        b, tf, n = hist.shape[0], cfg.num_future, cfg.tokens_per_step
        mask = future_mask.view(b, tf, n, 1)
        if action_mask is not None and actions is not None:  # padded dimensions of a narrower robot carry nothing
            actions = actions * action_mask[:, None, :].to(actions.dtype)
        if self.streams:
            x = self._streams(hist, fut, mask, actions, actions_visible, history_visible)
        else:
            x = self._fused(hist, fut, mask, actions, actions_visible, history_visible)
        return self._place(x, hist, proprio, lang, embodiment, view_mask)

    def _streams(self, hist, fut, mask, actions, actions_visible, history_visible) -> torch.Tensor:
        """The reference's embedding: (B, Tf, N, W) before positions."""
        cfg = self.cfg
        b, tf, n = hist.shape[0], cfg.num_future, cfg.tokens_per_step
        token = self.mask_token.to(fut.dtype)
        x = torch.where(mask, token, self.z_proj(fut))
        ctx = self.z_proj_cond(hist)  # future frame t reads history frame t
        if history_visible is not None:
            ctx = torch.where(history_visible.view(b, 1, 1, 1), ctx, token)
        hidden = self.action_mask.to(fut.dtype)
        if actions is None:
            act = hidden.expand(b, cfg.action_horizon, -1)
        else:
            act = torch.where(actions_visible.view(b, 1, 1), self.action_proj(actions), hidden)
        act = act.repeat_interleave(tf * n // cfg.action_horizon, dim=1).view(b, tf, n, -1)
        return self.fuse(torch.cat([x, ctx.to(x.dtype), act.to(x.dtype)], -1))

    def _fused(self, hist, fut, mask, actions, actions_visible, history_visible) -> torch.Tensor:
        """This project's embedding: (B, Tf, N, W) before positions."""
        cfg = self.cfg
        b, tf, n = hist.shape[0], cfg.num_future, cfg.tokens_per_step
        latent_mask = cfg.mask_token_space == "latent"
        fut = torch.where(mask, self.mask_token.to(fut.dtype) if latent_mask else 0.0, fut)  # (B, Tf, N, Dt)
        ctx = rearrange(hist, "b t n d -> b n (t d)").unsqueeze(1).expand(b, tf, n, -1)  # (B, Tf, N, Th*Dt)
        if history_visible is not None:
            ctx = ctx * history_visible.view(b, 1, 1, 1).to(ctx.dtype)
        if actions is None:
            act = self.action_mask.expand(b, tf, -1)
        else:
            act = self.action_proj(rearrange(actions, "b (t k) a -> b t (k a)", t=tf))  # (B, Tf, W)
            act = torch.where(actions_visible.view(b, 1, 1), act, self.action_mask.to(act.dtype))
        act = act.unsqueeze(2).expand(b, tf, n, -1)  # actions spread over their frame's grid
        x = self.fuse(torch.cat([fut, ctx.to(fut.dtype), act.to(fut.dtype)], -1))
        if not latent_mask:  # the masked tokens' latent part is zero; the mask token takes its place
            x = torch.where(mask, x + self.mask_token.to(x.dtype), x)
        return x

    def _place(self, x, hist, proprio, lang, embodiment, view_mask) -> torch.Tensor:
        """(B, Tf, N, W) tokens -> positions, absent views, the prefix tokens: (B, P + L, W)."""
        cfg = self.cfg
        b, tf, n = x.shape[0], cfg.num_future, cfg.tokens_per_step
        if self.view_pos is None:
            x = x + self.time_pos + self.space_pos
        else:
            x = x.view(b, tf, cfg.num_views, cfg.tokens_per_frame, -1)
            if view_mask is not None:  # an absent camera: its tokens say so, and only that
                x = torch.where(view_mask.view(b, 1, -1, 1, 1), x, self.absent.to(x.dtype))
            x = x + self.view_pos + self.space_pos.unsqueeze(2)
            x = x.view(b, tf, n, -1) + self.time_pos
        x = rearrange(x, "b t n w -> b (t n) w")
        buffer = self.buffer.expand(b, -1, -1).to(x.dtype)
        if self.proprio is not None:  # proprioception is added to every buffer token
            if proprio is None:
                proprio = hist.new_zeros(b, cfg.num_history, cfg.proprio_dim)
            buffer = buffer + self.proprio(proprio.reshape(b, 1, -1).to(x.dtype))
        if self.embodiment is not None and embodiment is not None:  # which robot: on every buffer token
            buffer = buffer + self.embodiment(embodiment.view(b)).unsqueeze(1).to(x.dtype)
        prefix = [buffer]
        if self.lang is not None:
            if lang is None:
                lang = hist.new_zeros(b, cfg.lang_tokens, cfg.lang_dim)
            if tuple(lang.shape) != (b, cfg.lang_tokens, cfg.lang_dim):
                raise ValueError(f"lang must be ({b}, {cfg.lang_tokens}, {cfg.lang_dim}), got {tuple(lang.shape)}")
            prefix.append(self.lang(lang.to(x.dtype)) + self.lang_pos)
        x = torch.cat([p.to(x.dtype) for p in prefix] + [x], 1)
        return x if self.norm is None else self.norm(x)


class Readout(nn.Module):
    """Decoder features -> per-token video condition and the action condition: one per chunk
    (``action_cond`` "chunk", (B, D)) or one per action ("per_action", (B, H, D)).

    The action condition reads the future frames and the prefix tokens (buffer tokens, which
    carry the proprioception, and language: global tokens that attend to everything). With
    ``action_readout_dim`` r > 0 every future token keeps r channels and the flattened grid is
    projected, so where the objects are in the frame reaches the action head (a mean over the
    frame's tokens would keep only what attention happened to write into every token); r = 0
    uses that frame mean.

    "per_action": each future frame's grid of every view goes through a 3x3 convolution, is
    pooled to 4x4 and projected (the views summed), an MLP gives one vector per frame, a linear
    map over time turns the frames' vectors into one per action, refined by an MLP. No parameter
    depends on the number of views.
    """

    POOL = 4  # the per-action readout's pooled grid (POOL x POOL per frame and view)

    def __init__(self, cfg: UVAConfig, num_prefix: int):
        super().__init__()
        self.cfg, self.num_prefix = cfg, num_prefix
        d, r = cfg.decoder_width, cfg.action_readout_dim
        self.video_pos = nn.Parameter(torch.zeros(1, cfg.num_future * cfg.tokens_per_step, d))
        self.per_action = cfg.action_cond == "per_action"
        self.reduce = nn.Linear(d, r) if r and not self.per_action else None
        if self.per_action:
            self.frame_conv = nn.Conv2d(d, d, 3, padding=1)
            self.frame_pool = nn.AdaptiveAvgPool2d(self.POOL)
            self.frame_in = nn.Linear(self.POOL * self.POOL * d, d)
            self.frame_out = nn.Linear(d, d)
            self.to_actions = nn.Linear(cfg.num_future, cfg.action_horizon)  # frames -> actions, over time
            self.refine = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
        else:
            self.action_pool = nn.Linear(cfg.num_future * (cfg.tokens_per_step * r if r else d), d)
        self.prefix_pool = nn.Linear(d, d) if num_prefix and cfg.action_prefix else None
        nn.init.normal_(self.video_pos, std=0.02)

    def _per_action(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L, D) future tokens -> (B, H, D) action conditions."""
        c, g = self.cfg, self.cfg.grid
        b = z.shape[0]
        x = rearrange(z, "b (t v h w) d -> (b t v) d h w", t=c.num_future, v=c.num_views, h=g, w=g)
        x = self.frame_pool(torch.relu(self.frame_conv(x))).flatten(1)  # (B Tf V, POOL^2 D)
        x = self.frame_in(x).view(b, c.num_future, c.num_views, -1).sum(2)  # (B, Tf, D)
        x = self.frame_out(torch.relu(x))
        x = self.to_actions(x.transpose(1, 2)).transpose(1, 2)  # (B, H, D)
        return self.refine(x)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prefix, z = z[:, : self.num_prefix], z[:, self.num_prefix :]  # (B, P, D), (B, L, D)
        video = z + self.video_pos
        if self.cfg.action_pos:  # the action condition reads what the video head reads
            z = video
        if self.per_action:
            action = self._per_action(z)
            if self.prefix_pool is not None:
                action = action + self.prefix_pool(prefix.mean(1)).unsqueeze(1)
            return video, action
        if self.reduce is not None:
            pooled = self.reduce(z).flatten(1)  # (B, L * r)
        else:
            pooled = rearrange(z, "b (t n) d -> b t n d", t=self.cfg.num_future).mean(2).flatten(1)  # all views
        action = self.action_pool(pooled)
        if self.prefix_pool is not None:
            action = action + self.prefix_pool(prefix.mean(1))
        return video, action


class UVA(nn.Module):
    """Unified Video Action model (policy, video generation, forward/inverse dynamics)."""

    def __init__(self, cfg: UVAConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = JointEmbed(cfg)
        num_tokens = self.embed.num_prefix + cfg.num_future * cfg.tokens_per_step
        self.backbone = EncoderDecoder(num_tokens, cfg.width, cfg.decoder_width, cfg.encoder_depth,
                                       cfg.decoder_depth, cfg.num_heads, cfg.mlp_ratio, cfg.dropout, cfg.mlp_act)
        self.readout = Readout(cfg, self.embed.num_prefix)
        # the instruction also reaches the action condition directly: through the prefix tokens
        # alone a small model learns which instruction asks for what very slowly (a one-word
        # difference is diluted by attention and the prefix mean)
        self.lang_skip = (nn.Linear(cfg.lang_tokens * cfg.lang_dim, cfg.decoder_width)
                          if cfg.lang_dim and cfg.lang_skip else None)
        self.video_head = DiffusionMLP(cfg.token_dim, cfg.decoder_width, cfg.head_width, cfg.head_depth)
        # the action head denoises the whole chunk, or (per_action) each action on its own condition
        self.action_head = DiffusionMLP(cfg.action_dim * (1 if cfg.action_cond == "per_action" else cfg.action_horizon),
                                        cfg.decoder_width, cfg.action_head_width, cfg.action_head_depth)
        self.diffusion = GaussianDiffusion.cosine(cfg.diffusion_steps)
        self.apply(self._init_linear)
        self.video_head.reset_parameters()
        self.action_head.reset_parameters()
        if self.embed.proprio is not None:  # zero: a model given proprioception starts as it was
            nn.init.zeros_(self.embed.proprio.weight)
        self.set_grad_checkpointing(cfg.grad_checkpointing)

    @staticmethod
    def _init_linear(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.backbone.encoder.grad_checkpointing = enabled
        self.backbone.decoder.grad_checkpointing = enabled

    # --- tokens ----------------------------------------------------------------------------
    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, T, C, S, S) or (B, T, V, C, S, S) -> (B, T, V*N, Dt), view by view."""
        p = self.cfg.patch_size
        if latents.ndim == 6:
            return rearrange(latents, "b t v c (h p) (w q) -> b t (v h w) (c p q)", p=p, q=p)
        return rearrange(latents, "b t c (h p) (w q) -> b t (h w) (c p q)", p=p, q=p)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T, V*N, Dt) -> (B, T, C, S, S) (one view) or (B, T, V, C, S, S)."""
        p, g, v = self.cfg.patch_size, self.cfg.grid, self.cfg.num_views
        if v > 1:
            return rearrange(tokens, "b t (v h w) (c p q) -> b t v c (h p) (w q)", v=v, h=g, w=g, p=p, q=p)
        return rearrange(tokens, "b t (h w) (c p q) -> b t c (h p) (w q)", h=g, w=g, p=p, q=p)

    def _check(self, name: str, x: torch.Tensor, frames: int) -> None:
        c = self.cfg
        want = (frames, *((c.num_views,) if c.num_views > 1 else ()), c.latent_channels, c.latent_size, c.latent_size)
        if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want:
            raise ValueError(f"{name} must be (B, {', '.join(map(str, want))}), got {tuple(x.shape)}")

    def features(self, history: torch.Tensor, future: torch.Tensor | None, future_mask: torch.Tensor,
                 actions: torch.Tensor | None, actions_visible: torch.Tensor,
                 proprio: torch.Tensor | None = None, lang: torch.Tensor | None = None,
                 embodiment: torch.Tensor | None = None, action_mask: torch.Tensor | None = None,
                 view_mask: torch.Tensor | None = None, history_visible: torch.Tensor | None = None):
        """One backbone pass -> (video condition (B, L, D), action condition (B, D)).

        Inputs of any float dtype are cast to the parameters' dtype here (bf16 weights under
        DeepSpeed, float32 under autocast): callers keep their tensors, and targets, in float32.
        """
        self._check("history", history, self.cfg.num_history)
        dtype = self.embed.fuse.weight.dtype
        hist = self.patchify(history.to(dtype))
        if future is None:
            fut = hist.new_zeros(hist.shape[0], self.cfg.num_future, *hist.shape[2:])  # all masked
        else:
            self._check("future", future, self.cfg.num_future)
            fut = self.patchify(future.to(dtype))
        if actions is not None:
            actions = actions.to(dtype)
        x = self.embed(hist, fut, future_mask, actions, actions_visible, proprio, lang, embodiment, action_mask,
                       view_mask, history_visible)
        video_cond, action_cond = self.readout(self.backbone(x))
        if self.lang_skip is not None and lang is not None:
            skip = self.lang_skip(lang.flatten(1).to(dtype))
            action_cond = action_cond + (skip.unsqueeze(1) if action_cond.ndim == 3 else skip)
        return video_cond, action_cond

    def _action_rows(self, b: int) -> tuple[int, int]:
        """(rows, row size) of the action head's target: (B, H * A) or, per action, (B * H, A)."""
        h, a = self.cfg.action_horizon, self.cfg.action_dim
        return (b * h, a) if self.cfg.action_cond == "per_action" else (b, h * a)

    # --- training --------------------------------------------------------------------------
    def _diffusion_rows(self, head: nn.Module, x0: torch.Tensor, cond: torch.Tensor,
                        generator: torch.Generator | None, k: int, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Per-row diffusion loss, each row drawn ``k`` times and averaged; ``weight`` (rows, D)
        limits it to some dimensions."""
        loss = self.diffusion.loss(head, x0.repeat(k, 1), cond.repeat(k, 1), generator,
                                   None if weight is None else weight.repeat(k, 1))
        return loss.view(k, -1).mean(0)

    def forward(self, history: torch.Tensor, future: torch.Tensor, actions: torch.Tensor,
                has_actions: torch.Tensor, mode_weights: torch.Tensor, proprio: torch.Tensor | None = None,
                lang: torch.Tensor | None = None, modes: torch.Tensor | None = None,
                generator: torch.Generator | None = None, embodiment: torch.Tensor | None = None,
                action_mask: torch.Tensor | None = None, view_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Masked training step. Returns loss (scalar), per-sample video/action parts and modes.

        ``modes`` (B,) fixes each sample's mode; otherwise they are drawn from ``mode_weights``.
        ``action_mask`` (B, A): the action loss covers only each sample's own dimensions.
        """
        b = history.shape[0]
        cfg = self.cfg
        device = history.device
        if modes is None:
            modes = sample_modes(mode_weights, has_actions.to(device), generator=generator)
        modes = modes.to(device)
        masks = build_masks(modes, cfg.num_future * cfg.tokens_per_step, cfg.mask_ratio_min, cfg.mask_ratio_std,
                            generator=generator, tube_frames=cfg.num_future if cfg.mask_kind == "tube" else 1)
        action_w = masks["action_loss"] * has_actions.float()
        visible = masks["actions_visible"] & has_actions.bool()
        if lang is not None and cfg.lang_dim and cfg.lang_dropout > 0 and self.training:
            # instruction dropout: some samples see "no instruction" (zeros), as a policy run without one
            keep = torch.rand(b, generator=generator, device=device) >= cfg.lang_dropout
            lang = lang * keep[:, None, None].to(lang.dtype)
        video_cond, action_cond = self.features(history, future, masks["future_mask"], actions, visible, proprio, lang,
                                                embodiment, action_mask, view_mask)

        # video loss: masked tokens of samples whose mode learns video
        target = rearrange(self.patchify(future.float()), "b t n d -> b (t n) d")  # float32 targets
        sel = masks["future_mask"] & (masks["video_loss"][:, None] > 0)
        if view_mask is not None and cfg.num_views > 1:  # no video loss on an absent camera's tokens
            present = view_mask.to(device).bool().view(b, 1, -1, 1).expand(b, cfg.num_future, -1, cfg.tokens_per_frame)
            sel = sel & present.reshape(b, -1)
        if not sel.any():  # keep every parameter in the graph (ZeRO expects a gradient for all)
            sel = torch.zeros_like(sel)
            sel[0, 0] = True
        rows = self._diffusion_rows(self.video_head, target[sel], video_cond[sel], generator, cfg.diffusion_batch_mul)
        sample_of_row = torch.arange(b, device=history.device)[:, None].expand_as(sel)[sel]
        video_sum = torch.zeros(b, device=history.device).index_add(0, sample_of_row, rows)
        video_per = video_sum / sel.sum(1).clamp(min=1) * masks["video_loss"]

        # action loss: whole chunk per sample whose mode learns actions
        # (per action: a row per action, the chunk's loss their mean)
        shape = self._action_rows(b)
        act_target, dims = actions.float().reshape(shape), None
        if action_mask is not None:  # (B, A) -> the layout of the rows; padding is zeroed in the
            # target too (the head sees every dimension of the noised chunk)
            dims = action_mask.to(device)[:, None, :].expand(b, cfg.action_horizon, -1).reshape(shape).float()
            act_target = act_target * dims
        act_rows = self._diffusion_rows(self.action_head, act_target, action_cond.reshape(shape[0], -1), generator,
                                        cfg.action_batch_mul or cfg.diffusion_batch_mul, dims)
        action_per = act_rows.view(b, -1).mean(1) * action_w

        per_sample = video_per + action_per
        return {"loss": per_sample.mean(), "video_loss": video_per, "action_loss": action_per,
                "per_sample": per_sample, "modes": modes}

    # --- inference -------------------------------------------------------------------------
    @torch.no_grad()
    def sample_actions(self, history: torch.Tensor, future: torch.Tensor | None, future_mask: torch.Tensor,
                       num_steps: int = 100, proprio=None, lang=None, generator=None,
                       temperature: float = 1.0, noise: torch.Tensor | None = None,
                       embodiment: torch.Tensor | None = None, view_mask: torch.Tensor | None = None,
                       action_mask: torch.Tensor | None = None,
                       history_visible: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone once, then the action head only: (B, H, A) normalized actions (float32).
        ``action_mask`` (B, A): a narrower robot's own dimensions; its padding is sampled as
        the zeros it was trained as (and returned as zeros).

        ``noise`` (num_steps, B, H * A) pre-drawn replaces the sampler's draws (see
        ``GaussianDiffusion.sample``); ``uva.sampler.ActionSampler`` uses it for a static loop.
        """
        b = history.shape[0]
        visible = torch.zeros(b, dtype=torch.bool, device=history.device)
        _, action_cond = self.features(history, future, future_mask, None, visible, proprio, lang, embodiment,
                                       view_mask=view_mask, history_visible=history_visible)
        shape = self._action_rows(b)  # (B, H * A), or (B * H, A) per action
        pad = None
        if action_mask is not None:  # (B, A) -> the layout of the rows
            pad = ~action_mask.to(history.device).bool()[:, None, :].expand(b, self.cfg.action_horizon, -1)
            pad = pad.reshape(shape)
        if noise is not None:  # (num_steps, B, H * A): the same draws in the rows' layout
            noise = noise.reshape(noise.shape[0], *shape)
        x = self.diffusion.respaced(num_steps).sample(self.action_head, shape, action_cond.reshape(shape[0], -1).float(),
                                                      generator, temperature, self.cfg.action_clip or None,
                                                      noise=noise, known_zero=pad)
        return x.view(b, self.cfg.action_horizon, self.cfg.action_dim)

    def predict_action(self, history: torch.Tensor, num_steps: int = 100, **kw) -> torch.Tensor:
        """Policy: every future token masked; never samples video."""
        mask = torch.ones(history.shape[0], self.cfg.num_future * self.cfg.tokens_per_step,
                          dtype=torch.bool, device=history.device)
        return self.sample_actions(history, None, mask, num_steps, **kw)

    def inverse_dynamics(self, history: torch.Tensor, future: torch.Tensor, num_steps: int = 100, **kw) -> torch.Tensor:
        """Actions that lead from ``history`` to the given ``future`` frames."""
        mask = torch.zeros(history.shape[0], self.cfg.num_future * self.cfg.tokens_per_step,
                           dtype=torch.bool, device=history.device)
        if not self.cfg.inverse_sees_history:  # the reference's inverse mode: the future frames alone
            kw["history_visible"] = torch.zeros(history.shape[0], dtype=torch.bool, device=history.device)
        return self.sample_actions(history, future, mask, num_steps, **kw)

    @torch.no_grad()
    def generate_video(self, history: torch.Tensor, actions: torch.Tensor | None = None, num_iters: int = 4,
                       num_steps: int = 100, proprio=None, lang=None, generator=None,
                       temperature: float = 1.0, embodiment: torch.Tensor | None = None,
                       view_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Future latents (B, Tf, C, S, S) by MaskGIT-style unmasking in ``num_iters`` rounds.

        With ``actions`` this is forward dynamics; without, action-free video prediction.
        """
        cfg = self.cfg
        b, L = history.shape[0], cfg.num_future * cfg.tokens_per_step
        if num_iters < 1 or num_iters > L:
            raise ValueError(f"num_iters must be in [1, {L}], got {num_iters}")
        device = history.device
        tokens = torch.zeros(b, L, cfg.token_dim, device=device)
        # the unmasking order: per token, or (tube masking) per position, shared by the future frames
        frames = cfg.num_future if cfg.mask_kind == "tube" else 1
        n = L // frames
        if num_iters > n:
            raise ValueError(f"num_iters must be in [1, {n}], got {num_iters}")
        rank = rng.rand((b, n), generator, device).argsort(-1).argsort(-1).repeat(1, frames)
        visible = torch.full((b,), actions is not None, dtype=torch.bool, device=device)
        diffusion = self.diffusion.respaced(num_steps)
        num_masked = n
        for it in range(num_iters):
            nxt = 0 if it == num_iters - 1 else int(math.floor(n * math.cos(math.pi / 2 * (it + 1) / num_iters)))
            nxt = max(0, min(nxt, num_masked - 1))  # unmask at least one token per round
            mask = rank < num_masked
            fut = self.unpatchify(tokens.view(b, cfg.num_future, cfg.tokens_per_step, -1))
            video_cond, _ = self.features(history, fut.to(history.dtype), mask, actions, visible, proprio, lang,
                                          embodiment, view_mask=view_mask)
            fill = mask & (rank >= nxt)
            tokens[fill] = diffusion.sample(self.video_head, (int(fill.sum()), cfg.token_dim),
                                            video_cond[fill].float(), generator, temperature,
                                            cfg.video_clip or None)
            num_masked = nxt
        return self.unpatchify(tokens.view(b, cfg.num_future, cfg.tokens_per_step, -1))

    def forward_dynamics(self, history: torch.Tensor, actions: torch.Tensor, **kw) -> torch.Tensor:
        """Future latents caused by ``actions`` from ``history``."""
        return self.generate_video(history, actions=actions, **kw)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts of the whole model and its parts."""
    parts = {name: sum(p.numel() for p in mod.parameters()) for name, mod in model.named_children()}
    return {"total": sum(p.numel() for p in model.parameters()), **parts}


