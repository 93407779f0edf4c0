"""The VAE bundle (safetensors + JSON, or a MAR/LDM ``.ckpt``) and the one frames -> latents step.

Bundle = ``<stem>.safetensors`` (weights) + ``<stem>.json`` (config, identity, training
report). ``load_vae`` accepts either file of a bundle, or a ``.ckpt``/``.pt`` file holding a
state dict (optionally under ``"model"`` or ``"state_dict"``) with a named preset for its layout.
Checkpoints are read with ``weights_only=True``: loading never runs pickled code. A relative
path that is not here is looked up among the installed artifacts (the default VAE).

``frames_to_pixels`` and ``encode_frames`` are the only conversion from camera frames to model
latents: the encode job, the policy and VAE training all call them, so a policy sees exactly
what the training data held.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from uva.vae import VAE_PRESETS, AutoencoderKL, VAEConfig, vae_identity
from uva_io.assets import find_artifact
from uva_io.config import from_dict


def save_vae(model: AutoencoderKL, path: str | Path, report: dict | None = None) -> Path:
    """Write ``path`` (.safetensors) and its .json beside it; returns the .safetensors path."""
    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    meta = {"config": asdict(model.config), "identity": vae_identity(model), "report": report or {}}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return path


def load_vae(path: str | Path, preset: str | None = None, device: str = "cpu") -> AutoencoderKL:
    """Load a frozen VAE in eval mode. ``preset`` names the layout of a ``.ckpt`` file."""
    try:
        path = find_artifact(path)
    except ValueError:
        path = Path(path)  # the messages below name the missing file
    if path.suffix in (".json", ".safetensors", ""):
        weights, meta_path = path.with_suffix(".safetensors"), path.with_suffix(".json")
        if not weights.is_file() or not meta_path.is_file():
            raise ValueError(f"VAE bundle '{path}': need both {weights.name} and {meta_path.name}")
        meta = json.loads(meta_path.read_text())
        cfg = from_dict(VAEConfig, meta["config"], prefix="vae")
        model = AutoencoderKL(cfg)
        model.load_state_dict(load_file(str(weights)))
        if meta.get("identity") and meta["identity"] != vae_identity(model):
            raise ValueError(f"VAE bundle '{path}': weights do not match the identity in {meta_path.name}")
    elif path.suffix in (".ckpt", ".pt", ".pth"):
        if not path.is_file():
            raise ValueError(f"VAE checkpoint '{path}' does not exist")
        if preset not in VAE_PRESETS:
            raise ValueError(f"VAE checkpoint '{path}' needs a layout preset, one of {sorted(VAE_PRESETS)}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("model", "state_dict"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
        # LDM checkpoints carry training-only tensors (discriminator, LPIPS); keep the autoencoder.
        prefixes = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
        model = AutoencoderKL(VAEConfig(**asdict(VAE_PRESETS[preset])))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"VAE checkpoint '{path}' does not match preset '{preset}': missing {missing[:3]}...")
    else:
        raise ValueError(f"VAE path '{path}': expected .safetensors/.json bundle or a .ckpt file")
    model.requires_grad_(False)
    return model.eval().to(device)


def frames_to_pixels(frames: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, H, W, 3) uint8 frames -> (N, 3, H, W) float32 pixels in [-1, 1] on ``device``."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


PRECISIONS = ("fp32", "bf16")


def resolve_precision(setting: str, on_gpu: bool) -> str:
    """'auto' -> bf16 where the VAE runs on a GPU, else fp32; 'fp32'/'bf16' as given."""
    if setting not in ("auto", *PRECISIONS):
        raise ValueError(f"VAE precision must be 'auto', 'fp32' or 'bf16', got {setting!r}")
    return ("bf16" if on_gpu else "fp32") if setting == "auto" else setting


@torch.inference_mode()
def encode_frames(vae: AutoencoderKL, frames: np.ndarray, batch_size: int = 64,
                  precision: str = "fp32") -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, C, h, w) float16 scaled latents (the posterior mean), as shards
    store them. The VAE runs on its own device: ``precision`` 'bf16' under bf16 autocast, 'fp32'
    in float32 (no TF32 on CUDA). The encode job records the precision in the shard set's index
    and the policy bundle, and the policy encodes with it: the same arithmetic on both sides."""
    if precision not in PRECISIONS:
        raise ValueError(f"VAE precision must be one of {PRECISIONS}, got {precision!r}")
    device = next(vae.parameters()).device
    bf16 = precision == "bf16"
    out = []
    for lo in range(0, len(frames), batch_size):
        x = frames_to_pixels(frames[lo : lo + batch_size], device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16), \
                torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
            z = vae.encode(x)
        out.append(z.float().cpu().numpy().astype(np.float16))
    return np.concatenate(out)
