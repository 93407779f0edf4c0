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


def load_weights(model: torch.nn.Module, state: dict, source, size: str, fresh_ok=None) -> list[str]:
    """Load ``state`` into ``model``, every tensor by name and shape. ``fresh_ok(name)`` marks
    parameters that may keep the model's own init where the checkpoint lacks them or has another
    shape (and that the checkpoint may have although the model does not); they are returned. Any
    other difference means a checkpoint of another size or layout: a ValueError naming it."""
    fresh_ok = fresh_ok or (lambda name: False)
    own = model.state_dict()
    state, grown = _grow_embodiments(own, state, source)
    state, refit = _fit_views(getattr(model, "cfg", None), own, state)
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


def _fit_views(cfg, own: dict, state: dict) -> tuple[dict, set[str]]:
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


def _grow_embodiments(own: dict, state: dict, source) -> tuple[dict, set[str]]:
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
