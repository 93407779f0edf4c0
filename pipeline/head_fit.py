"""Fitting the action head alone on cached policy conditions (a fine-tune stage of kind ``action_head``).

A joint fine-tuning step pays one backbone pass per window, and its action head sees only
``micro_batch_size`` distinct conditions per step. Once the backbone is trained, the policy's
condition of a window (history frames, proprioception, instruction; every future token masked,
no action visible: what ``UVA.predict_action`` computes) no longer changes, so it is computed once
for every training window and the action head, a small MLP, trains on the cache at a large batch
for many steps at a fraction of a joint step's cost. Everything but the head keeps its weights.

    stages:
      - {name: heads, steps: 300, lr: 1.0e-3, freeze: [backbone]}
      - {name: all, steps: 3000, lr: 5.0e-4}
      - {name: action_head, kind: action_head, steps: 6000, lr: 1.0e-3, warmup_steps: 100, batch_size: 256}

The stage writes a step folder like a joint stage's (``model.safetensors``, ``ema.safetensors``,
``model_config.json``, then ``COMPLETE``), so exporting and later stages read it the same way. It
runs on rank 0 (the head is a few hundred thousand parameters); other ranks wait for its marker.
A killed stage starts over (it takes minutes); a finished one is skipped.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import torch

from pipeline.components.checkpoint import RunCheckpoints
from pipeline.components.ema import EMA
from pipeline.components.lr_schedule import warmup_cosine
from pipeline.data import DataConfig, ShardSetStream, collate, merged_stats
from uva import rng
from uva.model import UVA


@dataclass
class ConditionCache:
    """The action head's rows: condition (N, D), normalized target (N, K) and the 0/1 weight of
    each target dimension (N, K), or None when every dimension counts (no padding)."""

    cond: torch.Tensor
    target: torch.Tensor
    dims: torch.Tensor | None
    num_windows: int

    def __len__(self) -> int:
        return self.cond.shape[0]


def action_windows(cfg: DataConfig, stats: dict | None = None) -> Iterator[dict]:
    """Every window with actions of every episode of ``cfg.sources``, each once, in shard order,
    normalized with ``stats`` (default: the sources' merged statistics, as training uses)."""
    stats = stats if stats is not None else merged_stats(cfg.sources)
    for src in cfg.sources:
        yield from ShardSetStream(src, cfg, stats=stats).every_window(with_actions=True)


@torch.no_grad()
def policy_conditions(model: UVA, windows: Iterator[dict], batch_size: int = 64,
                      device: str | torch.device = "cpu") -> ConditionCache:
    """The policy condition of each window (eval mode, every future token masked, no action
    visible) with its normalized action chunk, in the action head's row layout."""
    was_training = model.training
    model.eval()
    conds, targets, dims, num_windows = [], [], [], 0
    n_future = model.cfg.num_future * model.cfg.tokens_per_step

    def flush(items: list[dict]) -> None:
        nonlocal num_windows
        batch = {k: v.to(device) for k, v in collate(items).items() if k != "__state__"}
        b = batch["history"].shape[0]
        mask = torch.ones(b, n_future, dtype=torch.bool, device=device)
        hidden = torch.zeros(b, dtype=torch.bool, device=device)
        _, cond = model.features(batch["history"], None, mask, None, hidden, batch.get("proprio"), batch.get("lang"),
                                 batch.get("embodiment"), view_mask=batch.get("view_mask"))
        rows, size = model._action_rows(b)
        own = batch["action_mask"][:, None, :].expand(b, model.cfg.action_horizon, -1).reshape(rows, size).float()
        conds.append(cond.reshape(rows, -1).float().cpu())
        targets.append((batch["actions"].float().reshape(rows, size) * own).cpu())  # padding zeroed, as in training
        dims.append(own.cpu())
        num_windows += b

    pending: list[dict] = []
    for win in windows:
        pending.append(win)
        if len(pending) == batch_size:
            flush(pending)
            pending = []
    if pending:
        flush(pending)
    model.train(was_training)
    if not num_windows:
        raise ValueError("action_head stage: the data has no window with actions")
    dim = torch.cat(dims)
    return ConditionCache(torch.cat(conds), torch.cat(targets), None if bool(dim.all()) else dim, num_windows)


def fit_action_head(model: UVA, cache: ConditionCache, steps: int, batch_size: int, lr: float,
                    warmup_steps: int = 0, weight_decay: float = 0.0, ema_decay: float = 0.999, seed: int = 0,
                    log: Callable[[dict, int], None] | None = None, log_every: int = 500) -> list[float]:
    """Train ``model.action_head`` alone on ``cache``: AdamW (betas 0.9, 0.95), linear warmup then
    cosine to zero, rows drawn without replacement within each pass over the cache, one noise draw
    per row. The head ends with its EMA weights (``ema_decay`` 0: the trained ones); returns the
    per-step losses. ``log(metrics, step)`` every ``log_every`` steps and at the last."""
    if steps <= 0 or batch_size <= 0 or lr <= 0 or warmup_steps < 0:
        raise ValueError(f"action_head stage: steps, batch_size and lr must be positive and warmup_steps >= 0, "
                         f"got {steps}, {batch_size}, {lr}, {warmup_steps}")
    head = model.action_head
    device = next(head.parameters()).device
    head.train()
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    sched = warmup_cosine(opt, warmup_steps, steps)
    ema = EMA(head, ema_decay) if ema_decay > 0 else None
    gen = rng.generator(seed, device)
    order = torch.Generator().manual_seed(seed)
    n = len(cache)
    perm, at = torch.randperm(n, generator=order), 0
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        if batch_size >= n:  # a cache smaller than a batch: every row, every step
            idx = torch.arange(n)
        else:
            if at + batch_size > n:  # a new pass over the rows
                perm, at = torch.randperm(n, generator=order), 0
            idx, at = perm[at: at + batch_size], at + batch_size
        x0, cond = cache.target[idx].to(device), cache.cond[idx].to(device)
        w = None if cache.dims is None else cache.dims[idx].to(device)
        loss = model.diffusion.loss(head, x0, cond, gen, w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            ema.update(step)
        losses.append(float(loss.detach()))
        if log is not None and (step % log_every == 0 or step == steps):
            recent = losses[-log_every:]
            log({"loss": sum(recent) / len(recent), "lr": sched.get_last_lr()[0],
                 "rows_per_s": step * min(batch_size, n) / (time.perf_counter() - t0)}, step)
    if not all(math.isfinite(x) for x in losses[-10:]):
        raise FloatingPointError(f"action_head stage: the loss is not finite ({losses[-1]})")
    if ema is not None:
        with torch.no_grad():
            for p, s in zip(ema.params, ema.shadow):
                p.copy_(s.to(p.dtype))
    head.eval()
    return losses


@torch.no_grad()
def head_loss(model: UVA, cache: ConditionCache, draws: int = 8, seed: int = 0, batch_size: int = 4096) -> float:
    """The action head's mean diffusion loss over ``cache`` (``draws`` noise draws per row from a
    fixed generator, so two heads are compared on the same noise)."""
    head = model.action_head
    device = next(head.parameters()).device
    gen = rng.generator(seed, device)
    was = head.training
    head.eval()
    total = 0.0
    for i in range(0, len(cache), batch_size):
        x0, cond = cache.target[i: i + batch_size].to(device), cache.cond[i: i + batch_size].to(device)
        w = None if cache.dims is None else cache.dims[i: i + batch_size].to(device).repeat(draws, 1)
        total += float(model.diffusion.loss(head, x0.repeat(draws, 1), cond.repeat(draws, 1), gen, w).sum()) / draws
    head.train(was)
    return total / len(cache)


def run_stage(cfg, batch_size: int, load) -> dict:
    """Run one ``action_head`` stage of training config ``cfg`` (its ``init_from`` the previous
    stage's checkpoints; ``total_steps``, ``optim.lr``/``warmup_steps``/``weight_decay``/``ema_decay``
    and ``seed`` as a joint stage reads them; ``eval_sources`` give a held-out head loss). Rank 0
    trains and saves; other ranks wait for the marker. Returns {'step', 'run_id', 'losses'}."""
    from pipeline.components.distributed import device_for, dist_env
    from pipeline.components.metrics import Tracker
    from pipeline.train import build_model, resolve_conditioning
    from uva_io.config import to_dict

    ckpts = RunCheckpoints(Path(cfg.run_dir) / "checkpoints", cfg.keep_last)
    env = dist_env()
    rank = env.rank
    if rank != 0:
        while ckpts.latest_step() != cfg.total_steps:
            time.sleep(5)
        return {"step": cfg.total_steps, "run_id": None, "losses": []}
    device = device_for(env.local_rank)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    cfg = resolve_conditioning(cfg)
    model, mcfg = build_model(cfg, rank, load)
    model.to(device)
    tracker = Tracker(run_dir, cfg.experiment, cfg.tracking_uri, rank, None, to_dict(cfg))
    (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=1))
    tracker.artifact(run_dir / "config.json")

    t0 = time.perf_counter()
    stats = merged_stats(cfg.data.sources)
    train = policy_conditions(model, action_windows(cfg.data, stats), device=device)
    held = None
    if cfg.eval_sources:
        held = policy_conditions(model, action_windows(replace(cfg.data, sources=cfg.eval_sources), stats),
                                 device=device)
    secs = time.perf_counter() - t0
    print(f"[head] conditions of {train.num_windows} training windows"
          + (f" and {held.num_windows} held-out" if held is not None else "") + f" in {secs:.0f} s", flush=True)
    before = {"head/train_loss": head_loss(model, train), **({"head/heldout_loss": head_loss(model, held)} if held else {})}
    tracker.log({**before, "head/cache_seconds": secs}, 0)

    def log(metrics: dict, step: int) -> None:
        tracker.log(metrics, step)
        print(f"[head] step {step}/{cfg.total_steps} loss {metrics['loss']:.4f} lr {metrics['lr']:.2e} "
              f"{metrics['rows_per_s']:.0f} rows/s", flush=True)

    losses = fit_action_head(model, train, cfg.total_steps, batch_size, cfg.optim.lr, cfg.optim.warmup_steps,
                             cfg.optim.weight_decay, cfg.optim.ema_decay, cfg.seed, log, cfg.log_every)
    after = {"head/train_loss": head_loss(model, train), **({"head/heldout_loss": head_loss(model, held)} if held else {})}
    tracker.log(after, cfg.total_steps)
    names = {"head/train_loss": "train", "head/heldout_loss": "heldout"}
    print("[head] head loss " + ", ".join(f"{names[k]} {before[k]:.4f} -> {after[k]:.4f}" for k in after), flush=True)
    save(ckpts, cfg.total_steps, model, asdict(mcfg))
    tracker.close()
    return {"step": cfg.total_steps, "run_id": tracker.run_id, "losses": losses}


def save(ckpts: RunCheckpoints, step: int, model: UVA, model_config: dict) -> Path:
    """A weights-only step folder: the head-fitted weights as both model and EMA weights (the
    head ends on its EMA, the rest is what it was), the architecture, then the marker."""
    from safetensors.torch import save_file

    folder = ckpts.step_dir(step)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    save_file(state, str(folder / "ema.safetensors"))
    (folder / "model_config.json").write_text(json.dumps(model_config, indent=1))
    ckpts.finish(step)
    return folder
