"""The DeepSpeed engine of a run: its JSON config generated from the TrainConfig (one place holds
the truth), AdamW over the trainable parameters and the warmup + cosine schedule."""

from __future__ import annotations

import torch

from pipeline.components.lr_schedule import warmup_cosine
from pipeline.train_config import TrainConfig


def deepspeed_config(cfg: TrainConfig, world_size: int, bf16: bool) -> dict:
    """The DeepSpeed JSON for ``cfg`` on ``world_size`` ranks."""
    ds = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "train_batch_size": cfg.micro_batch_size * cfg.grad_accum_steps * world_size,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg.zero_stage == 3:
        ds["zero_optimization"].update({"stage3_gather_16bit_weights_on_model_save": False})
    return ds


def build_engine(model: torch.nn.Module, cfg: TrainConfig, world_size: int, bf16: bool):
    """(DeepSpeed engine, LR scheduler) training ``model``'s parameters that require gradients."""
    import deepspeed

    o = cfg.optim
    opt = torch.optim.AdamW(param_groups(model, o.weight_decay, o.no_decay_1d), lr=o.lr,
                            weight_decay=o.weight_decay, betas=tuple(o.betas))
    sched = warmup_cosine(opt, o.warmup_steps, cfg.total_steps, o.min_lr_ratio)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                           config=deepspeed_config(cfg, world_size, bf16))
    return engine, sched


def param_groups(model: torch.nn.Module, weight_decay: float, no_decay_1d: bool) -> list[dict]:
    """AdamW groups of the trainable parameters: one with ``weight_decay``; with ``no_decay_1d``
    the 1-d parameters (norm scales, biases, mask and absent-view tokens) in a second group
    without decay (the MAR / UVA reference's rule)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not no_decay_1d:
        return [{"params": [p for _, p in named], "weight_decay": weight_decay}]
    is_flat = {n: p.ndim <= 1 or n.endswith(".bias") for n, p in named}
    flat = [p for n, p in named if is_flat[n]]
    rest = [p for n, p in named if not is_flat[n]]
    return [g for g in ({"params": rest, "weight_decay": weight_decay}, {"params": flat, "weight_decay": 0.0})
            if g["params"]]
