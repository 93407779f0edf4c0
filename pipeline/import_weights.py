"""uva-import: other code's checkpoints as this project's weights, read without running their code.

    # MAR's ImageNet weights (github.com/LTH14/mar, checkpoint-last.pth) as the initialization of
    # a pretraining run: the layout options must be the run's (configs/pretrain/mar_stage1_video.yaml)
    uva-import mar pretrained_models/mar/mar_base/checkpoint-last.pth --size uva-B \\
        --set embed_style=streams embed_norm=true mlp_act=gelu action_pos=true \\
        --output artifacts/mar_base_init.safetensors
    uva-pretrain --config configs/pretrain/mar_stage1_video.yaml --set init_from=artifacts/mar_base_init.safetensors

    # a released UVA checkpoint (the reference workspace's .ckpt) as a policy bundle
    uva-import reference checkpoints/pusht.ckpt --output runs/reference/pusht
    uva-eval --env pusht --policy runs/reference/pusht --output runs/eval/reference_pusht

Each writes a JSON report beside its output: parameters mapped, resized, new and dropped, and what
the import reproduces or makes deterministic. Files are read through uva_io.safe_load's allow-list:
a checkpoint that names any other Python global is refused with that name, nothing of it run.
The import is deterministic: the same file gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

IMPORT_FORMAT = "uva-import/1"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare word: a string
    return out


def import_mar(ckpt: str | Path, size: str, output: str | Path, overrides: dict | None = None,
               ema: bool = True) -> dict:
    """MAR checkpoint -> ``output`` (.safetensors, only MAR's tensors in this model's names) and
    ``output``.json (the report). Returns the report."""
    from safetensors.torch import save_file

    from pipeline.weights import mar_size, mar_state
    from uva.config import model_config
    from uva_io.safe_load import load_checkpoint

    ckpt, output = Path(ckpt), Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"--output {output}: must end in .safetensors")
    payload = load_checkpoint(ckpt)
    key = "model_ema" if ema else "model"
    if not isinstance(payload, dict) or not isinstance(payload.get(key), dict):
        have = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{ckpt}: no '{key}' state dict (MAR's save_model writes model and model_ema; found "
                         f"{have})")
    mar = payload[key]
    if "z_proj.weight" not in mar or "encoder_pos_embed_learned" not in mar:
        raise ValueError(f"{ckpt}: '{key}' is not a MAR model (no z_proj / encoder_pos_embed_learned)")
    cfg = model_config(size, **(overrides or {}))
    have = mar_size(mar)
    for k in ("width", "decoder_width"):
        if have[k] != getattr(cfg, k):
            raise ValueError(f"{ckpt}: MAR's {k} is {have[k]}, {size}'s {getattr(cfg, k)}: pick the size of that "
                             f"MAR model (mar_base -> uva-B, mar_large -> uva-L, mar_huge -> uva-H)")
    state, report = mar_state(mar, cfg)
    args = payload.get("args")
    report = {"format": IMPORT_FORMAT, "kind": "mar", "source": str(ckpt), "sha256": _sha256(ckpt),
              "weights": key, "size": size, "mar": have, "mar_args": dict(vars(args)) if hasattr(args, "__dict__")
              else None, "model_config": asdict(cfg), **report}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    save_file({k: v.contiguous() for k, v in sorted(state.items())}, str(tmp),
              metadata={"uva_import": "mar", "format": IMPORT_FORMAT, "source_sha256": report["sha256"]})
    tmp.replace(output)
    output.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    return report


def import_reference(ckpt: str | Path, output: str | Path, ema: bool = True, num_heads: int | None = None,
                     robot: str | None = None) -> dict:
    """A UVA reference checkpoint -> a policy bundle at ``output`` (model, VAE, statistics, the
    observation pipeline and sampling settings) with import_report.json. Returns the report."""
    import tempfile

    from safetensors.torch import save_file

    from pipeline.export import export_bundle
    from pipeline.robots import RobotConfig, available_robots, load_robot
    from pipeline.weights import reference_state
    from uva import UVA
    from uva.config import UVAConfig
    from uva.vae import AutoencoderKL, VAEConfig, vae_identity
    from uva_io.safe_load import load_checkpoint
    from uva_io.vae_bundle import save_vae

    ckpt = Path(ckpt)
    ref = reference_state(load_checkpoint(ckpt), num_heads=num_heads, ema=ema)
    cfg = UVAConfig(**ref["model_config"])
    model = UVA(cfg)
    own = model.state_dict()
    no_actions = "action_head.out.weight" not in ref["state"]  # a video-only stage: said in the report
    missing = sorted(k for k in set(own) - set(ref["state"])
                     if not (no_actions and k.startswith(("action_head.", "readout."))))
    if missing:
        raise ValueError(f"{ckpt}: the reference's weights leave {missing[:4]} unset: a layout this import does "
                         f"not know")
    model.load_state_dict({**own, **ref["state"]})
    vcfg = VAEConfig(**{**ref["vae_config"], "ch_mult": tuple(ref["vae_config"]["ch_mult"]),
                        "attn_resolutions": tuple(ref["vae_config"]["attn_resolutions"])})
    vae = AutoencoderKL(vcfg)
    vae.load_state_dict(ref["vae_state"])
    s, a = ref["settings"], cfg.action_dim
    name = robot or s.get("task") or "reference"
    if name in available_robots() and load_robot(name).action_dim == a:
        base = load_robot(name)
        rob = RobotConfig(**{**asdict(base), "normalization": "affine", "unnormalized": [], "relative_to": {}})
    else:
        if robot:
            raise ValueError(f"--robot {robot}: not a registered robot with {a} action dimensions")
        rob = RobotConfig(name=name, action_names=[f"a{i}" for i in range(a)], normalization="affine")
    rob.validate()
    report = {"format": IMPORT_FORMAT, "kind": "reference", "source": str(ckpt), "sha256": _sha256(ckpt),
              "settings": s, "model_config": ref["model_config"], **ref["report"]}
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.safetensors"
        save_file({k: v.contiguous() for k, v in sorted(model.state_dict().items())}, str(weights))
        vae_path = save_vae(vae, Path(tmp) / "vae.safetensors")
        window = {"num_history": cfg.num_history, "num_future": cfg.num_future, "action_horizon": cfg.action_horizon,
                  "frame_stride": s["frame_stride"]}
        export_bundle(output, weights, asdict(cfg), rob, ref["action_stats"], window, vae_path, vae_identity(vae),
                      sampling_steps=s["sampling_steps"], source={"import": "reference", "checkpoint": str(ckpt),
                                                                  "sha256": report["sha256"]},
                      observation={"resize": "stretch_bilinear", "latents": "posterior_mean_fp32"},
                      temperature=s["temperature"],
                      extra_files={"import_report.json": json.dumps(report, indent=1, default=str)})
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="uva-import", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="kind", required=True)
    m = sub.add_parser("mar", help="MAR ImageNet weights as a pretraining initialization")
    m.add_argument("checkpoint")
    m.add_argument("--size", required=True, help="uva-B (mar_base), uva-L (mar_large), uva-H (mar_huge)")
    m.add_argument("--output", required=True, help="OUT.safetensors (its report: OUT.json)")
    m.add_argument("--no-ema", action="store_true", help="the raw weights instead of MAR's EMA weights")
    m.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model settings of the run that will load it (layout options, latent grid, frames, views)")
    r = sub.add_parser("reference", help="a released UVA checkpoint as a policy bundle")
    r.add_argument("checkpoint")
    r.add_argument("--output", required=True, help="the bundle folder")
    r.add_argument("--no-ema", action="store_true", help="the model weights instead of the EMA weights")
    r.add_argument("--num-heads", type=int, help="attention heads (only for a model_size the import does not know)")
    r.add_argument("--robot", help="the registered robot the bundle acts for (default: the task's name)")
    args = p.parse_args(argv)
    from uva_io.safe_load import UnsafeCheckpoint

    try:
        if args.kind == "mar":
            rep = import_mar(args.checkpoint, args.size, args.output, _parse_sets(args.set), ema=not args.no_ema)
            where = Path(args.output).with_suffix(".json")
        else:
            rep = import_reference(args.checkpoint, args.output, ema=not args.no_ema, num_heads=args.num_heads,
                                   robot=args.robot)
            where = Path(args.output) / "import_report.json"
    except (ValueError, FileNotFoundError, UnsafeCheckpoint) as e:
        print(f"uva-import: {e}", file=sys.stderr)
        sys.exit(2)
    counts = {k: len(rep.get(k, [])) for k in ("mapped", "resized", "new", "dropped")}
    print(f"[import] {rep['kind']} {rep['source']} ({rep.get('weights')}): "
          + ", ".join(f"{n} {k}" for k, n in counts.items()) + f"; report {where}")
    for note in rep.get("notes", []):
        print(f"[import] {note}")


if __name__ == "__main__":
    main()
