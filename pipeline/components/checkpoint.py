"""The run folder's checkpoints: the one owner of their format.

    run_dir/checkpoints/step_N/
        <DeepSpeed files>        model, optimizer/ZeRO state, LR schedule, client state (step,
                                 world size, MLflow run id, config)
        rank<R>.pt               each rank's generator and torch RNG state and EMA shard
        model.safetensors        consolidated fp32 weights (gathered under ZeRO-3), no DeepSpeed needed
        ema.safetensors          the same for the EMA weights (runs with EMA)
        model_config.json        the architecture (UVAConfig fields)
        COMPLETE                 written last: only folders that have it are ever read

Keeps the last ``keep`` complete folders and removes half-written ones (a job killed mid-save).
``resolve_weights`` turns ``init_from`` / ``--pretrained`` (a step folder, a checkpoints folder, a
.safetensors file) into a weights file; ``export_weights`` picks the weights a bundle ships.
Fitting weights of one layout into a model of another is pipeline/weights.py's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from pipeline.components.ema import EMA

MARKER = "COMPLETE"


class RunCheckpoints:
    """``root``/step_N folders, complete once their marker exists, the newest ``keep`` kept."""

    def __init__(self, root: str | Path, keep: int = 3):
        self.root, self.keep = Path(root), keep

    def complete(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(int(p.name[5:]) for p in self.root.glob("step_*") if (p / MARKER).is_file())

    def latest_step(self) -> int | None:
        steps = self.complete()
        return steps[-1] if steps else None

    def step_dir(self, step: int) -> Path:
        return self.root / f"step_{step}"

    def save(self, engine, step: int, *, rank: int, client: dict, local: dict, model_config: dict,
             ema: EMA | None = None, zero3: bool = False) -> None:
        """Collective: every rank calls it. DeepSpeed state, this rank's ``local`` state, the
        consolidated weights, then (rank 0, after a barrier) the marker, retention and cleanup."""
        tag = f"step_{step}"
        engine.save_checkpoint(str(self.root), tag, client_state=client)
        folder = self.step_dir(step)
        torch.save(local, folder / f"rank{rank}.pt")
        model_sd, ema_sd = consolidated_weights(engine.module, ema, rank, zero3)
        if rank == 0:
            from safetensors.torch import save_file

            save_file(model_sd, str(folder / "model.safetensors"))
            (folder / "model_config.json").write_text(json.dumps(model_config, indent=1))
            if ema_sd:
                save_file(ema_sd, str(folder / "ema.safetensors"))
        torch.distributed.barrier()
        if rank == 0:
            self.finish(step)
        torch.distributed.barrier()

    def finish(self, step: int) -> None:
        """Mark ``step`` complete, drop all but the newest ``keep``, remove torn folders."""
        (self.step_dir(step) / MARKER).write_text(str(step))
        for old in self.complete()[: -self.keep]:
            shutil.rmtree(self.step_dir(old), ignore_errors=True)
        for torn in self.root.glob("step_*"):  # partial folders of a job killed mid-save
            if not (torn / MARKER).is_file() and torn.name != f"step_{step}":
                shutil.rmtree(torn, ignore_errors=True)

    def load_latest(self, engine, rank: int, world_size: int) -> tuple[int, dict, dict] | None:
        """(step, client state, this rank's local state) of the latest complete checkpoint, loaded
        into ``engine``; None when there is none. Another number of ranks is refused."""
        step = self.latest_step()
        if step is None:
            return None
        tag = f"step_{step}"
        _, client = engine.load_checkpoint(str(self.root), tag)
        if client["world_size"] != world_size:
            raise ValueError(f"checkpoint {tag} was written by {client['world_size']} ranks; "
                             f"resume with the same number of ranks (got {world_size})")
        local = torch.load(self.step_dir(step) / f"rank{rank}.pt", map_location="cpu", weights_only=True)
        return step, client, local


def consolidated_weights(module: torch.nn.Module, ema: EMA | None, rank: int, zero3: bool) -> tuple[dict, dict]:
    """Full fp32 model and EMA state dicts on rank 0 (empty elsewhere), at any ZeRO stage.

    Collective under ZeRO-3 (parameters are gathered), so every rank must call it.
    """
    names = {id(p): n for n, p in module.named_parameters()}
    keys = set(module.state_dict().keys())
    buffers = {n: b.detach().float().cpu().clone() if b.is_floating_point() else b.detach().cpu().clone()
               for n, b in module.named_buffers() if n in keys}
    params = list(module.parameters())
    gather = lambda ps: {names[id(p)]: p.detach().float().cpu().clone() for p in ps}  # noqa: E731
    model_sd: dict = {}
    ema_sd: dict = {}
    if zero3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            if rank == 0:
                model_sd = gather(params)
        if ema is not None:
            with ema.swapped_in(), deepspeed.zero.GatheredParameters(ema.params, modifier_rank=None):
                if rank == 0:
                    ema_sd = gather(ema.params)
    elif rank == 0:
        model_sd = gather(params)
        if ema is not None:
            ema_sd = {names[id(p)]: s.detach().float().cpu().clone() for p, s in zip(ema.params, ema.shadow)}
    if rank != 0:
        return {}, {}
    model_sd.update(buffers)
    if ema is not None:  # parameters without gradients and buffers are not averaged: take them as they are
        ema_sd = {**model_sd, **ema_sd}
    return model_sd, ema_sd


def _complete_step_dir(path: Path, what: str) -> Path:
    """``path`` if it is a complete step folder, else the latest complete step inside it."""
    if (path / MARKER).is_file():
        return path
    step = RunCheckpoints(path).latest_step()
    if step is None:
        raise FileNotFoundError(f"{what} {path}: neither a complete step_N checkpoint nor a folder holding one")
    return path / f"step_{step}"


def resolve_weights(path: str | Path, which: str = "ema", what: str = "init_from") -> tuple[Path, dict | None]:
    """(weights file, architecture or None) for a step folder, a checkpoints folder (its latest
    complete step) or a .safetensors file. ``which``: ``ema`` (falls back to ``model`` for a run
    without EMA) or ``model``. ``what`` names the setting in error messages."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise FileNotFoundError(f"{what} {path}: not a checkpoint folder or a .safetensors file")
        arch = path.with_name("model_config.json")
        return path, json.loads(arch.read_text()) if arch.is_file() else None
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path}: does not exist")
    step = _complete_step_dir(path, what)
    weights = step / f"{which}.safetensors"
    if not weights.is_file() and which == "ema":
        weights = step / "model.safetensors"  # a run trained without EMA
    if not weights.is_file():
        raise FileNotFoundError(f"{what} {step}: has no {which}.safetensors (written by checkpoints of this "
                                f"version and later)")
    arch = step / "model_config.json"
    return weights, json.loads(arch.read_text()) if arch.is_file() else None


def export_weights(checkpoints: str | Path) -> tuple[Path, Path, dict]:
    """(step folder, weights file, architecture) a policy bundle ships: the EMA weights of the
    latest complete checkpoint (its model weights for a run without EMA)."""
    step = _complete_step_dir(Path(checkpoints), "export")
    weights, arch = resolve_weights(step, "ema", "export")
    if arch is None:
        raise FileNotFoundError(f"export: {step} has no model_config.json")
    return step, weights, arch
