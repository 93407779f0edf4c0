"""Saving and loading VAE weights: our safetensors + JSON bundle, or a MAR/LDM ``.ckpt``.

Bundle = ``<stem>.safetensors`` (weights) + ``<stem>.json`` (config, identity, training
report). ``load_vae`` accepts either file of a bundle, or a ``.ckpt``/``.pt`` file holding a
state dict (optionally under ``"model"`` or ``"state_dict"``) with a named preset for its layout.
Checkpoints are read with ``weights_only=True``: loading never runs pickled code.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline.config import from_dict
from uva.vae import VAE_PRESETS, AutoencoderKL, VAEConfig, vae_identity


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
    path = Path(path)
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
