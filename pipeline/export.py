"""Export a trained policy as a self-contained inference bundle (no pickles, no DeepSpeed).

    bundle/
      model.safetensors   UVA weights (the EMA weights of the checkpoint, or its model weights)
      vae.safetensors     the frozen VAE the latents came from, and its vae.json (config, identity)
      policy.json         model config, robot (action meaning, units, rate, cameras), action
                          statistics and normalization, the frame layout (history frames, their
                          spacing in control steps, actions per chunk), VAE identity, sampling steps,
                      proprioception statistics (models that take proprioception), the VAE
                      precision the latents were encoded in, the text encoder of the
                      instructions (a model that takes language), relative chunks (the
                      proprioception each action is measured from and the chunks' statistics)
      text_encoder/       a ``transformers:FOLDER`` text encoder's folder, copied (the built-in
                          hash encoder needs nothing)

Written to a temporary folder and renamed into place: a bundle is whole or absent.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

BUNDLE_FORMAT = "uva-policy/1"


def bundle_weights(path: str | Path) -> tuple[Path, dict] | None:
    """(weights file, architecture) when ``path`` is a bundle folder, else None."""
    meta = Path(path) / "policy.json"
    if not meta.is_file():
        return None
    return Path(path) / "model.safetensors", json.loads(meta.read_text())["model_config"]


def _stat_fields(stats: dict) -> dict:
    return {k: stats[k] for k in ("mean", "std", "q01", "q99", "min", "max", "count", "dim", "scale", "offset")
            if k in stats}


def export_bundle(out_dir: str | Path, weights: str | Path, model_config: dict, robot, stats: dict,
                  window: dict, vae_path: str | Path, vae_identity: str, sampling_steps: int = 16,
                  camera: str = "main", source: dict | None = None, proprio_stats: dict | None = None,
                  vae_precision: str = "fp32", cameras: list[str] | None = None,
                  relative: dict | None = None, observation: dict | None = None, temperature: float | None = None,
                  extra_files: dict | None = None, time_base: str = "control_rows") -> Path:
    """Write the bundle; ``robot`` is a RobotConfig, ``stats`` its entry of the shards' stats.json,
    ``proprio_stats`` its proprioception statistics when the model takes proprioception,
    ``vae_precision`` the arithmetic the shards' latents were encoded in (the policy uses it),
    ``relative`` {"origin", "stats"} when the model predicts relative chunks (pipeline/finetune.py),
    ``observation`` how frames become the model's latents when they are not this project's encode
    (an imported model: {"resize": "stretch_bilinear"}), ``temperature`` the sampling temperature,
    ``extra_files`` {name: text} written beside (an import's report), ``time_base`` what one
    predicted action is: "control_rows" (one control step of the robot, at ``robot.control_hz``)
    or "latent_spread" (a model trained on shard sets that stored actions at the latent rate)."""
    from pipeline.robots import action_limits
    from uva.vae import vae_identity as identity_of
    from uva_io.vae_bundle import load_vae, save_vae

    if model_config.get("proprio_dim") and not proprio_stats:
        raise ValueError("export: the model takes proprioception, but no proprioception statistics were given")
    if relative and not model_config.get("proprio_dim"):
        raise ValueError("export: relative chunks are offsets from the robot's state, but the model takes none")
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(weights, tmp / "model.safetensors")
    vae = load_vae(vae_path)
    if identity_of(vae) != vae_identity:
        raise ValueError(f"VAE {vae_path} has identity {identity_of(vae)}, but the training latents were "
                         f"encoded with {vae_identity}: pass the VAE the shards were made with")
    save_vae(vae, tmp / "vae.safetensors")
    text = dict(model_config.get("text_encoder") or {}) if model_config.get("lang_dim") else {}
    if text.get("spec", "").startswith("transformers:"):  # the bundle carries the text model
        folder = Path(text["spec"].partition(":")[2])
        if not folder.is_dir():
            raise ValueError(f"export: the model's text encoder folder {folder} is missing (it embedded the "
                             f"training instructions; the bundle needs a copy)")
        shutil.copytree(folder, tmp / "text_encoder")
        text["folder"] = "text_encoder"
    meta = {
        "format": BUNDLE_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model_config": model_config,
        "robot": asdict(robot),
        "action_dim": robot.action_dim,
        "normalization": robot.normalization,
        "norm_mask": robot.norm_mask(),
        "stats": _stat_fields(stats),
        "proprio_stats": _stat_fields(proprio_stats) if proprio_stats and model_config.get("proprio_dim") else None,
        "window": window,
        "time_base": time_base,
        "control_hz": float(robot.control_hz),
        "image_size": int(vae.config.resolution),
        "camera": camera,
        "cameras": list(cameras) if cameras else [camera],  # the camera of each view, in view order
        "vae": {"file": "vae.safetensors", "identity": vae_identity, "scale": float(vae.config.scale),
                "precision": vae_precision},
        "sampling_steps": int(sampling_steps),
        "text_encoder": text or None,
        "relative": {"origin": list(relative["origin"]), "stats": _stat_fields(relative["stats"])} if relative else None,
        "action_limits": action_limits(robot, stats),
        "source": source or {},
    }
    if observation:
        meta["observation"] = observation
    if temperature is not None:
        meta["temperature"] = float(temperature)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    (tmp / "policy.json").write_text(json.dumps(meta, indent=1))
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)
    return out
