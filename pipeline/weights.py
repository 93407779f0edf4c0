"""Weight surgery: every mapping of weights between layouts has its owner here.

- ``load_weights``: a checkpoint of this project into a model, by name and shape, with the
  embodiment table grown (``grow_embodiments``) and the camera views fitted (``fit_views``) when
  the model has more robots or another number of views than the checkpoint.
- ``load_partial``: an imported initialization (``uva-import mar``) into a model: what the file
  has must fit; what it lacks keeps the model's init.
- ``mar_state``: MAR's ImageNet weights (LTH14/mar ``checkpoint-last.pth``) in this model's names.
- ``reference_state``: a UVA reference checkpoint (its workspace's ``.ckpt``) as this model's
  configuration, weights, VAE and action statistics.

The checkpoint module (pipeline/components/checkpoint.py) only saves, loads and resolves run folders.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

def load_weights(model: torch.nn.Module, state: dict, source, size: str, fresh_ok=None) -> list[str]:
    """Load ``state`` into ``model``, every tensor by name and shape. ``fresh_ok(name)`` marks
    parameters that may keep the model's own init where the checkpoint lacks them or has another
    shape (and that the checkpoint may have although the model does not); they are returned. Any
    other difference means a checkpoint of another size or layout: a ValueError naming it."""
    fresh_ok = fresh_ok or (lambda name: False)
    own = model.state_dict()
    state, grown = grow_embodiments(own, state, source)
    state, refit = fit_views(getattr(model, "cfg", None), own, state)
    grown = grown | refit
    mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    missing = sorted(k for k in set(own) - set(state) - grown if not fresh_ok(k))
    unexpected = sorted(k for k in set(state) - set(own) if not fresh_ok(k))
    fresh = {k for k in mismatched if fresh_ok(k)} | {k for k in set(own) - set(state) - grown if fresh_ok(k)}
    bad = [k for k in mismatched if k not in fresh]
    if bad or missing or unexpected:
        detail = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:4])
        raise ValueError(f"checkpoint {source} is from a different model size or layout than {size} here: "
                         f"shape mismatch [{detail}], missing {missing[:4]}, unexpected {unexpected[:4]}")
    model.load_state_dict({**own, **{k: v for k, v in state.items() if k in own and k not in fresh}})
    return sorted(fresh | grown)


EMBODIMENTS = "embed.embodiment.weight"
VIEW_POS, ABSENT, SPACE_POS = "embed.view_pos", "embed.absent", "embed.space_pos"
DECODER_POS, VIDEO_POS, ACTION_POOL = "backbone.decoder_pos", "readout.video_pos", "readout.action_pool.weight"


def fit_views(cfg, own: dict, state: dict) -> tuple[dict, set[str]]:
    """The camera views of a checkpoint fitted to a model with another number of views (e.g. a
    two-camera pretrained model fine-tuned to a one-camera robot, or the reverse). Fewer views:
    the first ones are kept, in every per-token parameter (positions, the action readout's
    grid); one view: the first view's embedding is folded into the spatial one (a one-view
    model has no view parameters), so that view's tokens are what they were. More views: the
    checkpoint's views first, the new ones keep the model's init (their columns of the action
    readout start at zero, so the new cameras start by changing nothing); from a one-view
    checkpoint the first view's embedding starts at zero. Returns (state, the names that are
    not the checkpoint's as they were)."""
    have, want = state.get(VIEW_POS), own.get(VIEW_POS)
    vh, vw = (1 if have is None else have.shape[2]), (1 if want is None else want.shape[2])
    same_grid = SPACE_POS in state and state[SPACE_POS].shape == own.get(SPACE_POS, state[SPACE_POS]).shape
    if cfg is None or vh == vw or not same_grid:
        return state, set()  # same views, or another layout altogether (reported by the caller)
    tf, n = cfg.num_future, cfg.tokens_per_frame
    state, refit = dict(state), set()
    pos = own.get(DECODER_POS)
    if pos is not None and DECODER_POS in state:  # prefix tokens first, then the (Tf, V, N) grid
        prefix = pos.shape[1] - tf * vw * n
        x = state[DECODER_POS]
        if x.shape[1] - tf * vh * n == prefix >= 0:
            grid = _resize_views(x[:, prefix:], pos[:, prefix:], tf, vh, vw)
            state[DECODER_POS] = torch.cat([x[:, :prefix].to(pos.dtype), grid], 1)
            refit.add(DECODER_POS)
    for name, zero in ((VIDEO_POS, False), (ACTION_POOL, True)):
        if name in state and name in own and state[name].numel() * vw == own[name].numel() * vh:
            state[name] = _resize_views(state[name], own[name], tf, vh, vw, zero)
            refit.add(name)
    if want is None:  # -> one view
        state[SPACE_POS] = state[SPACE_POS] + have[:, :, 0].to(state[SPACE_POS].dtype)
        state.pop(VIEW_POS)
        state.pop(ABSENT, None)
        return state, refit | {SPACE_POS}
    refit.add(VIEW_POS)
    if have is None:  # one view ->
        have = torch.zeros_like(want[:, :, :1])
        state[ABSENT] = own[ABSENT]
        refit.add(ABSENT)
    state[VIEW_POS] = _resize_views(have, want, 1, vh, vw)
    return state, refit


def _resize_views(x: torch.Tensor, ref: torch.Tensor, frames: int, vh: int, vw: int,
                  zero: bool = False) -> torch.Tensor:
    """``x``, laid out (dim 0, frames, vh views, rest) after its first dimension, in ``ref``'s
    shape (vw views): x's first views, then ref's (or zeros) for the views x lacks."""
    x, r = x.reshape(x.shape[0], frames, vh, -1), ref.reshape(ref.shape[0], frames, vw, -1)
    keep = min(vh, vw)
    extra = torch.zeros_like(r[:, :, keep:]) if zero else r[:, :, keep:]
    return torch.cat([x[:, :, :keep].to(r.dtype), extra], 2).reshape(ref.shape)


def grow_embodiments(own: dict, state: dict, source) -> tuple[dict, set[str]]:
    """The embodiment table of a model that knows more robots than the checkpoint: the
    checkpoint's rows first (the model's list starts with the checkpoint's), each new robot's row
    the mean of the known ones. A checkpoint without a table (trained before embodiments, or
    without them) leaves the model's init. Returns (state, {name} when it grew or was new)."""
    if EMBODIMENTS not in own:
        return {k: v for k, v in state.items() if k != EMBODIMENTS}, set()
    if EMBODIMENTS not in state:
        return state, {EMBODIMENTS}
    have, want = state[EMBODIMENTS], own[EMBODIMENTS]
    if have.shape == want.shape:
        return state, set()
    if have.shape[1] != want.shape[1] or have.shape[0] > want.shape[0]:
        return state, set()  # another width, or more robots than this model: a shape mismatch below
    extra = have.mean(0, keepdim=True).expand(want.shape[0] - have.shape[0], -1)
    return {**state, EMBODIMENTS: torch.cat([have, extra.to(have.dtype)])}, {EMBODIMENTS}


# --- imported initializations ---------------------------------------------------------------
def imported_from(path) -> str | None:
    """The kind of import ("mar") a .safetensors file was written by, None for this project's own."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("uva_import")


def load_partial(model: torch.nn.Module, state: dict, source) -> list[str]:
    """An imported initialization into ``model``: every tensor the file has must exist here with
    its shape (a ValueError naming the first that does not); the model's own parameters the file
    lacks keep their init and are returned."""
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    bad = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
           if k in own and state[k].shape != own[k].shape]
    if unexpected or bad:
        raise ValueError(f"init_from {source}: an imported initialization for another layout than this model: "
                         f"shape mismatch {bad[:4]}, not in the model {unexpected[:4]} (import it again with this "
                         f"model's size and settings)")
    model.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in state.items()}})
    return sorted(set(own) - set(state))


# --- shared name maps -------------------------------------------------------------------------
def _block_names(src: str, dst: str) -> list[tuple[str, str]]:
    """timm ViT block -> this project's Block (same math; the MLP's layers are mlp.0 / mlp.2)."""
    pairs = [("norm1", "norm1"), ("attn.qkv", "attn.qkv"), ("attn.proj", "attn.proj"), ("norm2", "norm2"),
             ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.2")]
    return [(f"{src}.{a}.{w}", f"{dst}.{b}.{w}") for a, b in pairs for w in ("weight", "bias")]


def _diffusion_mlp_names(src: str, dst: str, depth: int) -> list[tuple[str, str]]:
    """MAR's SimpleMLPAdaLN -> uva.heads.DiffusionMLP (same math, other names)."""
    pairs = [("time_embed.mlp.0", "time_embed.0"), ("time_embed.mlp.2", "time_embed.2"),
             ("cond_embed", "cond_embed"), ("input_proj", "input_proj"),
             ("final_layer.linear", "out"), ("final_layer.adaLN_modulation.1", "final_ada.1")]
    for i in range(depth):
        pairs += [(f"res_blocks.{i}.in_ln", f"blocks.{i}.norm"), (f"res_blocks.{i}.mlp.0", f"blocks.{i}.mlp.0"),
                  (f"res_blocks.{i}.mlp.2", f"blocks.{i}.mlp.2"),
                  (f"res_blocks.{i}.adaLN_modulation.1", f"blocks.{i}.ada.1")]
    return [(f"{src}.{a}.{w}", f"{dst}.{b}.{w}") for a, b in pairs for w in ("weight", "bias")]


def _count(state: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def resize_grid(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, g*g, D) position table of a g x g token grid -> (1, grid*grid, D), bicubic."""
    n, d = pos.shape[1], pos.shape[2]
    g = int(round(n ** 0.5))
    if g * g != n:
        raise ValueError(f"a position table of {n} tokens is not a square grid")
    if g == grid:
        return pos
    x = pos.float().reshape(1, g, g, d).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(1, grid * grid, d).to(pos.dtype)


# --- MAR ----------------------------------------------------------------------------------------
MAR_BUFFER = 64  # MAR's buffer (class) tokens before the 256 image tokens in its position tables


def mar_state(mar: dict, cfg, seed: int = 0) -> tuple[dict, dict]:
    """MAR weights (a ``model`` or ``model_ema`` state dict) -> (state in this project's names for a
    model of ``cfg``, report {mapped, resized, new, dropped, notes}). The state holds only what
    MAR gives; ``load_partial`` leaves the rest at the model's init.

    Mapped: the encoder and decoder blocks and norms, ``decoder_embed``, the video head
    (``diffloss.net``, when widths and depth agree), and with ``embed_style: streams`` the token
    projection ``z_proj`` (also the start of ``z_proj_cond``: history tokens are the same kind of
    token) and with ``embed_norm`` its ``z_proj_ln``. The position tables' 16 x 16 image part is
    resized to this grid where it differs and repeated over the future frames and views (the
    decoder's and the video head's; the encoder's spatial table); the buffer tokens start from
    MAR's unconditional buffer (``fake_latent`` plus its buffer positions)."""
    from uva import UVA

    if cfg.patch_size != 1 or cfg.latent_channels != mar["z_proj.weight"].shape[1]:
        raise ValueError(f"MAR's tokens are single {mar['z_proj.weight'].shape[1]}-channel latents: the model needs "
                         f"patch_size=1 and latent_channels={mar['z_proj.weight'].shape[1]} "
                         f"(got {cfg.patch_size}, {cfg.latent_channels})")
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(seed)
        own = UVA(cfg).state_dict()  # shapes (and a seeded init for prefix positions MAR lacks)
    out, report = {}, {"mapped": [], "resized": [], "new": [], "dropped": [], "notes": []}

    def put(dst: str, value: torch.Tensor, src: str, how: str = "mapped") -> None:
        if dst not in own:
            report["dropped"].append(f"{src} (the model has no {dst})")
            return
        if tuple(value.shape) != tuple(own[dst].shape):
            report["dropped"].append(f"{src} {tuple(value.shape)} (the model's {dst} is {tuple(own[dst].shape)})")
            return
        out[dst] = value.detach().float().clone()
        report[how].append(f"{src} -> {dst}")

    enc, dec = _count(mar, r"encoder_blocks\.(\d+)\."), _count(mar, r"decoder_blocks\.(\d+)\.")
    for i in range(min(enc, cfg.encoder_depth)):
        for s, d in _block_names(f"encoder_blocks.{i}", f"backbone.encoder.blocks.{i}"):
            put(d, mar[s], s)
    for i in range(min(dec, cfg.decoder_depth)):
        for s, d in _block_names(f"decoder_blocks.{i}", f"backbone.decoder.blocks.{i}"):
            put(d, mar[s], s)
    if enc != cfg.encoder_depth or dec != cfg.decoder_depth:
        report["notes"].append(f"MAR has {enc}/{dec} encoder/decoder blocks, the model {cfg.encoder_depth}/"
                               f"{cfg.decoder_depth}: the first ones are mapped")
    for a, b in (("encoder_norm", "backbone.encoder.norm"), ("decoder_norm", "backbone.decoder.norm"),
                 ("decoder_embed", "backbone.decoder_embed")):
        for w in ("weight", "bias"):
            put(f"{b}.{w}", mar[f"{a}.{w}"], f"{a}.{w}")
    if cfg.embed_style == "streams":
        for w in ("weight", "bias"):
            put(f"embed.z_proj.{w}", mar[f"z_proj.{w}"], f"z_proj.{w}")
            put(f"embed.z_proj_cond.{w}", mar[f"z_proj.{w}"], f"z_proj.{w} (copy)")
    else:
        report["dropped"].append("z_proj (the fused embedding has no per-stream projection: "
                                 "model.embed_style=streams takes it)")
    if cfg.embed_norm:
        for w in ("weight", "bias"):
            put(f"embed.norm.{w}", mar[f"z_proj_ln.{w}"], f"z_proj_ln.{w}")
    else:
        report["dropped"].append("z_proj_ln (model.embed_norm=true takes it)")
    grid, frames = cfg.grid, cfg.num_future * cfg.num_views
    image = MAR_BUFFER if mar["encoder_pos_embed_learned"].shape[1] > MAR_BUFFER else 0
    how = "mapped" if mar["encoder_pos_embed_learned"].shape[1] - image == cfg.tokens_per_frame else "resized"
    enc_pos = resize_grid(mar["encoder_pos_embed_learned"][:, image:], grid)
    put("embed.space_pos", enc_pos.unsqueeze(1), "encoder_pos_embed_learned[image]", how)
    nb = cfg.num_buffer_tokens
    if nb and image:
        put("embed.buffer", mar["fake_latent"].unsqueeze(1) + mar["encoder_pos_embed_learned"][:, :nb],
            f"fake_latent + encoder_pos_embed_learned[:{nb}]")
    dpos = own["backbone.decoder_pos"]
    prefix = dpos.shape[1] - frames * cfg.tokens_per_frame
    dec_grid = resize_grid(mar["decoder_pos_embed_learned"][:, image:], grid).repeat(1, frames, 1)
    dec_prefix = (mar["decoder_pos_embed_learned"][:, :prefix] if prefix <= image
                  else own["backbone.decoder_pos"][:, :prefix])
    put("backbone.decoder_pos", torch.cat([dec_prefix.float(), dec_grid.float()], 1),
        "decoder_pos_embed_learned (image part repeated over frames and views)", "resized")
    put("readout.video_pos", resize_grid(mar["diffusion_pos_embed_learned"], grid).repeat(1, frames, 1),
        "diffusion_pos_embed_learned (repeated over frames and views)", "resized")
    depth = _count(mar, r"diffloss\.net\.res_blocks\.(\d+)\.")
    if depth == cfg.head_depth and mar["diffloss.net.input_proj.weight"].shape[0] == cfg.head_width:
        for s, d in _diffusion_mlp_names("diffloss.net", "video_head", depth):
            put(d, mar[s], s)
    else:
        report["dropped"].append(f"diffloss.net (width {mar['diffloss.net.input_proj.weight'].shape[0]}, depth "
                                 f"{depth}; the model's video head is {cfg.head_width} x {cfg.head_depth})")
    for k in ("class_emb.weight", "mask_token", "fake_latent"):
        if k in mar and not any(k in m for m in report["mapped"]):
            report["dropped"].append(f"{k} (ImageNet classes / MAR's token dropping: no counterpart)")
    report["new"] = sorted(set(own) - set(out))
    return out, report


def mar_size(mar: dict) -> dict:
    """Widths and depths of a MAR state dict (what ``--size`` must agree with)."""
    return {"width": mar["z_proj.weight"].shape[0], "decoder_width": mar["decoder_embed.weight"].shape[0],
            "encoder_depth": _count(mar, r"encoder_blocks\.(\d+)\."),
            "decoder_depth": _count(mar, r"decoder_blocks\.(\d+)\."),
            "head_width": mar["diffloss.net.input_proj.weight"].shape[0],
            "head_depth": _count(mar, r"diffloss\.net\.res_blocks\.(\d+)\.")}


# --- the UVA reference ------------------------------------------------------------------------
REFERENCE_HEADS = {"mar_tiny": 6, "mar_small": 6, "mar_base": 12, "mar_large": 16, "mar_huge": 16}
# what the reference's options would add that this import does not carry
REFERENCE_REFUSED = ("use_proprioception", "use_history_action", "predict_wrist_img", "predict_proprioception",
                     "different_history_freq")


def reference_state(payload: dict, num_heads: int | None = None, ema: bool = True) -> dict:
    """A UVA reference checkpoint (the dict its workspace saves, read through uva_io.safe_load)
    -> {model_config, state, vae_config, vae_state, action_stats, settings, report}.

    The model is this project's UVA in the reference's layout (``embed_style: streams``, exact
    GELU, the input LayerNorm, the action condition on the decoder features with the video
    positions, no prefix pool or language skip, inverse dynamics without history, tube masks),
    so the same weights compute the same function."""
    from uva_io.safe_load import plain

    if not isinstance(payload, dict) or "state_dicts" not in payload or "cfg" not in payload:
        raise ValueError("not a UVA workspace checkpoint: expected a dict with 'cfg' and 'state_dicts'")
    cfg = plain(payload["cfg"])
    policy = (cfg.get("model") or cfg).get("policy") or cfg.get("policy")
    if not isinstance(policy, dict) or "autoregressive_model_params" not in policy:
        raise ValueError("the checkpoint's cfg has no policy.autoregressive_model_params: not a UVA policy checkpoint")
    on = [k for k in REFERENCE_REFUSED if policy.get(k)]
    if on:
        raise ValueError(f"the checkpoint's policy sets {', '.join(on)}: those inputs are not carried by this import "
                         f"(PushT and LIBERO-style single-camera policies without proprioception are)")
    ar, act = policy["autoregressive_model_params"], policy.get("action_model_params") or {}
    if act.get("act_model_type", "conv_fc") != "conv_fc":
        raise ValueError(f"action_model_params.act_model_type={act.get('act_model_type')!r}: only conv_fc is carried")
    which = "ema_model" if ema and "ema_model" in payload["state_dicts"] else "model"
    # a state dict saved from a wrapped module (DDP / accelerate "module.", torch.compile "_orig_mod.")
    full = {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in payload["state_dicts"][which].items()}
    ref = {k[len("model."):]: v for k, v in full.items() if k.startswith("model.")}
    vae = {k[len("vae_model."):]: v for k, v in full.items() if k.startswith("vae_model.")}
    if not ref:
        raise ValueError(f"state_dicts.{which} holds no model.* weights")
    size = ar.get("model_size")
    heads = num_heads or REFERENCE_HEADS.get(size)
    if not heads:
        raise ValueError(f"model_size {size!r} is not one of {sorted(REFERENCE_HEADS)}: pass --num-heads")
    w, wd = ref["z_proj.weight"].shape[0], ref["decoder_embed.weight"].shape[0]
    token_dim = ref["z_proj.weight"].shape[1]
    seq = ref["spatial_pos_embed"].shape[1]
    frames = ref["temporal_pos_embed"].shape[1]
    action_dim = ref["action_proj_cond.weight"].shape[1]
    lang = "text_proj_cond.weight" in ref
    text_tokens = ref["text_pos_embed"].shape[1] if lang else 0
    has_act = "diffactloss.net.input_proj.weight" in ref
    horizon = ref["diffactloss.interpolate.weight"].shape[0] if has_act else 16
    mlp = ref["encoder_blocks.0.mlp.fc1.weight"].shape[0] / w
    model_config = {
        "latent_channels": int(ar.get("vae_embed_dim", token_dim)), "latent_size": int(round(seq ** 0.5)),
        "patch_size": int(ar.get("patch_size", 1)), "num_views": 1, "num_history": frames, "num_future": frames,
        "action_dim": action_dim, "action_horizon": horizon, "proprio_dim": 0,
        "lang_dim": ref["text_proj_cond.weight"].shape[1] if lang else 0, "lang_tokens": text_tokens or 16,
        "lang_dropout": float(ar.get("label_drop_prob", 0.1)),
        "width": w, "decoder_width": wd, "encoder_depth": _count(ref, r"encoder_blocks\.(\d+)\."),
        "decoder_depth": _count(ref, r"decoder_blocks\.(\d+)\."), "num_heads": int(heads), "mlp_ratio": mlp,
        "num_buffer_tokens": 0, "action_cond": "per_action",
        "head_width": ref["diffloss.net.input_proj.weight"].shape[0],
        "head_depth": _count(ref, r"diffloss\.net\.res_blocks\.(\d+)\."),
        "action_head_width": ref["diffactloss.net.input_proj.weight"].shape[0] if has_act else 1024,
        "action_head_depth": _count(ref, r"diffactloss\.net\.res_blocks\.(\d+)\.") if has_act else 6,
        "diffusion_steps": int(ar.get("act_diff_training_steps", 1000)),
        "diffusion_batch_mul": int(ar.get("diffusion_batch_mul", 1)) or 1,
        "action_clip": 1.0, "video_clip": 0.0, "dropout": float(ar.get("proj_dropout", 0.0)),
        "mask_ratio_min": float(ar.get("mask_ratio_min", 0.7)), "mask_kind": "tube",
        "mlp_act": "gelu", "embed_style": "streams", "embed_norm": True, "action_pos": True,
        "action_prefix": False, "lang_skip": False, "inverse_sees_history": False,
    }
    if model_config["latent_channels"] * model_config["patch_size"] ** 2 != token_dim:
        raise ValueError(f"z_proj takes {token_dim}-d tokens, the cfg says vae_embed_dim={model_config['latent_channels']} "
                         f"patch_size={model_config['patch_size']}")
    state, report = {}, {"weights": which, "mapped": [], "new": [], "dropped": [], "notes": []}
    used: set[str] = set()

    def put(dst: str, value: torch.Tensor, src: str) -> None:
        state[dst] = value.detach().float().contiguous()
        report["mapped"].append(f"{src} -> {dst}")
        used.update(k.strip() for k in src.split("+"))

    for a, b in (("fake_latent_x", "embed.mask_token"), ("fake_action_latent", "embed.action_mask")):
        put(b, ref[a].reshape(-1), a)
    for a, b in (("z_proj", "embed.z_proj"), ("z_proj_cond", "embed.z_proj_cond"),
                 ("action_proj_cond", "embed.action_proj"), ("proj_cond_x_layer", "embed.fuse"),
                 ("z_proj_ln", "embed.norm"), ("encoder_norm", "backbone.encoder.norm"),
                 ("decoder_embed", "backbone.decoder_embed"), ("decoder_norm", "backbone.decoder.norm"),
                 ("diffactloss.conv.0", "readout.frame_conv"), ("diffactloss.fc.0", "readout.frame_in"),
                 ("diffactloss.fc.2", "readout.frame_out"), ("diffactloss.interpolate", "readout.to_actions"),
                 ("diffactloss.refine.0", "readout.refine.0"), ("diffactloss.refine.2", "readout.refine.2"),
                 ("text_proj_cond", "embed.lang")):
        for p in ("weight", "bias"):
            if f"{a}.{p}" in ref:
                put(f"{b}.{p}", ref[f"{a}.{p}"], f"{a}.{p}")
    state["embed.buffer"] = torch.zeros(1, 0, w)  # no buffer tokens (an empty table)
    put("embed.time_pos", ref["temporal_pos_embed"].unsqueeze(2), "temporal_pos_embed")
    put("embed.space_pos", ref["spatial_pos_embed"].unsqueeze(1), "spatial_pos_embed")
    if lang:
        put("embed.lang_pos", ref["text_pos_embed"], "text_pos_embed")
    for i in range(model_config["encoder_depth"]):
        for s, d in _block_names(f"encoder_blocks.{i}", f"backbone.encoder.blocks.{i}"):
            put(d, ref[s], s)
    for i in range(model_config["decoder_depth"]):
        for s, d in _block_names(f"decoder_blocks.{i}", f"backbone.decoder.blocks.{i}"):
            put(d, ref[s], s)
    grid = (ref["decoder_temporal_pos_embed"][:, :, None] + ref["decoder_spatial_pos_embed"][:, None]).flatten(1, 2)
    dpos = torch.cat([ref["decoder_text_pos_embed"], grid], 1) if lang else grid
    put("backbone.decoder_pos", dpos, "decoder_text_pos_embed + decoder_temporal_pos_embed + decoder_spatial_pos_embed"
        if lang else "decoder_temporal_pos_embed + decoder_spatial_pos_embed")
    diff = (ref["diffusion_temporal_embed"][:, :, None] + ref["diffusion_spatial_embed"][:, None]).flatten(1, 2)
    put("readout.video_pos", diff, "diffusion_temporal_embed + diffusion_spatial_embed")
    for s, d in _diffusion_mlp_names("diffloss.net", "video_head", model_config["head_depth"]):
        put(d, ref[s], s)
    if has_act:
        for s, d in _diffusion_mlp_names("diffactloss.net", "action_head", model_config["action_head_depth"]):
            put(d, ref[s], s)
    else:
        report["notes"].append("no action head in the weights (a video-only stage): the action head and its "
                               "readout keep their init; this bundle's actions are untrained")
    for k in sorted(set(ref) - used):
        why = {"fake_latent": "the instruction-dropout token: training only; this model hides an instruction with "
                              "zeros"}.get(k, "no counterpart")
        report["dropped"].append(f"{k} ({why})")
    # VAE: MAR's kl16 layout, the same names as uva.vae
    vae_config = {"ch": vae["encoder.conv_in.weight"].shape[0],
                  "ch_mult": list((policy.get("vae_model_params") or {}).get("ddconfig", {}).get("ch_mult",
                                                                                               [1, 1, 2, 2, 4])),
                  "num_res_blocks": _count(vae, r"encoder\.down\.0\.block\.(\d+)\."),
                  "z_channels": vae["post_quant_conv.weight"].shape[0], "attn_resolutions": [16],
                  "resolution": int(ar.get("img_size", 256)), "scale": 0.2325}
    norm = {k[len("normalizer.params_dict."):]: v for k, v in full.items() if k.startswith("normalizer.params_dict.")}
    if "action.scale" not in norm:
        raise ValueError("the checkpoint has no normalizer.params_dict.action: its action statistics are missing")
    action_stats = {"scale": norm["action.scale"].double().tolist(), "offset": norm["action.offset"].double().tolist()}
    for s in ("min", "max", "mean", "std"):
        if f"action.input_stats.{s}" in norm:
            action_stats[s] = norm[f"action.input_stats.{s}"].double().tolist()
    task = cfg.get("task") or {}
    runner = task.get("env_runner") or {}
    n_obs = int(runner.get("n_obs_steps") or task.get("n_obs_steps") or 16)
    settings = {"image_size": vae_config["resolution"], "sampling_steps": int(str(ar.get("act_diff_testing_steps", "100"))),
                "temperature": float(ar.get("temperature", 1.0)), "n_obs_steps": n_obs,
                "frame_stride": max(1, n_obs // frames), "n_action_steps": int(policy.get("n_action_steps", 8)),
                "task": task.get("name"), "normalizer_type": (task.get("dataset") or {}).get("normalizer_type", "all")}
    if settings["normalizer_type"] != "all":
        report["notes"].append(f"normalizer_type={settings['normalizer_type']!r}: actions are taken as they are "
                               f"(identity statistics)")
        action_stats = {"scale": [1.0] * action_dim, "offset": [0.0] * action_dim}
    if lang:
        report["notes"].append("language: the reference embeds an instruction with CLIP ViT-B/32's text tower "
                               "(openai/clip-vit-base-patch32), which is not in the checkpoint: supply that model's "
                               "text features (one 512-d vector, repeated over the 64 text tokens) as the policy's "
                               "instruction tokens")
    report["notes"] += [
        "deterministic where the reference is not: no attention dropout at inference (timm 0.9.7 applies it in eval "
        "mode), the VAE posterior mean instead of a sample",
        "reproduced: 256 px bilinear upscaling of the frames, every 4th of the last 16 frames, 16 actions per "
        "call, the action sampler's x0 clip to [-1, 1] (none for video), the sampling temperature, the respaced "
        "schedule; noise is drawn by this project's generator (the same draws give the same actions)",
    ]
    return {"model_config": model_config, "state": state, "vae_config": vae_config, "vae_state": vae,
            "action_stats": action_stats, "settings": settings, "report": report, "cfg": cfg}
