"""Typed configuration of a pretraining or fine-tuning run (configs/pretrain/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.data import DataConfig, SourceConfig


@dataclass
class ModelSection:
    """Which registered size, with field overrides (the data layout, widths for tests)."""

    size: str = "uva-tiny"  # uva-tiny | uva-S | uva-B | uva-L | uva-H
    overrides: dict[str, Any] = field(default_factory=dict)  # UVAConfig fields


@dataclass
class OptimSection:
    """AdamW with linear warmup then cosine decay, all counted in optimizer steps."""

    lr: float = 1e-4
    weight_decay: float = 0.02
    no_decay_1d: bool = False  # no weight decay on 1-d parameters (norms, biases, mask tokens) and biases
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.0  # final lr = lr * min_lr_ratio
    grad_clip: float = 1.0  # 0 disables clipping
    ema_decay: float = 0.9999  # 0 disables EMA

    def validate(self) -> None:
        if self.lr <= 0 or self.warmup_steps < 0 or not 0 <= self.ema_decay < 1:
            raise ValueError("optim: lr must be > 0, warmup_steps >= 0, ema_decay in [0, 1)")


@dataclass
class TrainConfig:
    """A whole training run."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    mode_weights: dict[str, float] = field(default_factory=lambda: {
        "policy": 1.0, "video": 1.0, "forward_dynamics": 1.0, "inverse_dynamics": 1.0, "joint": 1.0})
    total_steps: int = 1000  # optimizer steps of the run
    micro_batch_size: int = 8  # samples per rank per forward
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    zero_stage: int = 2  # DeepSpeed ZeRO stage 0-3
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    checkpoint_every: int = 500  # optimizer steps between checkpoints
    keep_last: int = 3  # complete checkpoints kept
    log_every: int = 10  # optimizer steps between metric logs
    run_dir: str = "runs/pretrain"  # checkpoints, MLflow store, logs
    experiment: str = "uva-pretrain"  # MLflow experiment name
    tracking_uri: str | None = None  # MLflow server; default: a file store in run_dir
    init_from: str | None = None  # weights to start from: step_N folder, checkpoints folder or .safetensors
    init_weights: str = "ema"  # ema | model: which weights of init_from
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes kept fixed (e.g. backbone)
    seed: int = 0
    # evaluation
    eval_every: int = 0  # optimizer steps between evaluations (0 = never)
    eval_sources: list[SourceConfig] = field(default_factory=list)  # held-out shard sets (default: training sets)
    eval_vae: str | None = None  # VAE bundle to decode predictions into an mp4 artifact (None = no video)
    eval_batch_size: int = 4
    eval_batches: int = 1  # held-out batches per evaluation, metrics averaged (one batch of 4 is noisy)
    eval_sampling_steps: int = 16  # diffusion steps for predicted actions and video
    eval_iters: int = 4  # MaskGIT rounds for predicted video

    def validate(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.init_weights not in ("ema", "model"):
            raise ValueError(f"init_weights must be ema or model, got {self.init_weights!r}")
        if not any(v > 0 for v in self.mode_weights.values()):
            raise ValueError("mode_weights: at least one mode needs a positive weight")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        for key in ("total_steps", "micro_batch_size", "grad_accum_steps", "checkpoint_every", "keep_last", "log_every",
                    "eval_batch_size", "eval_batches"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
