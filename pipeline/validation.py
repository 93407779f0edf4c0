"""Held-out validation during training: per-mode loss, policy action error, video prediction
PSNR, and a decoded prediction video (real pixels through the VAE decoder) for MLflow.

Every rank runs the same forward passes (ZeRO-3 gathers parameters collectively); only rank 0
decodes and writes the video.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from uva import rng
from uva.model import UVA
from uva.modes import MODE_NAMES, mode_weights_tensor


@torch.no_grad()
def evaluate(model: UVA, batch: dict, num_steps: int, num_iters: int, generator: torch.Generator) -> dict:
    """Metrics on one held-out batch; returns metrics and the predicted future latents."""
    was_training = model.training
    model.eval()
    metrics = {}
    weights = mode_weights_tensor({n: 1.0 for n in MODE_NAMES})
    b = batch["history"].shape[0]
    for i, name in enumerate(MODE_NAMES):
        out = model(**batch, mode_weights=weights, modes=torch.full((b,), i), generator=generator)
        metrics[f"val/loss/{name}"] = float(out["per_sample"].float().mean())
    cond = {k: batch.get(k) for k in ("proprio", "embodiment", "view_mask", "lang")}
    pred_actions = model.predict_action(batch["history"], num_steps=num_steps, generator=generator,
                                        action_mask=batch.get("action_mask"), **cond)
    has = batch["has_actions"].bool()
    if has.any():
        err = (pred_actions.float() - batch["actions"].float())[has]  # (n, H, A)
        if "action_mask" in batch:  # each robot's own dimensions
            err = err[batch["action_mask"][has].bool()[:, None, :].expand_as(err)]
        metrics["val/action_mse"] = float(err.pow(2).mean())
    future = model.generate_video(batch["history"], num_iters=num_iters, num_steps=num_steps, generator=generator,
                                  **cond)
    err = (future.float() - batch["future"].float()).pow(2)
    if batch.get("view_mask") is not None and err.ndim == 6:  # an absent camera has no truth to compare with
        present = batch["view_mask"].bool()[:, None, :, None, None, None].expand_as(err)
        err = err[present]
    metrics["val/latent_mse"] = float(err.mean())
    model.train(was_training)
    return {"metrics": metrics, "future": future}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of pixel tensors in [-1, 1]."""
    mse = (a.clamp(-1, 1) - b.clamp(-1, 1)).pow(2).mean().item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))


@torch.no_grad()
def decode_video(vae, latents: torch.Tensor) -> torch.Tensor:
    """(T, C, h, w) scaled latents -> (T, 3, H, W) pixels in [-1, 1]; (T, V, C, h, w) (several
    views) -> (T, 3, H, V * W), the views side by side."""
    if latents.ndim == 5:
        t, v = latents.shape[:2]
        pix = vae.decode(latents.flatten(0, 1).float().cpu())
        return pix.view(t, v, *pix.shape[1:]).permute(0, 2, 3, 1, 4).flatten(3)
    return vae.decode(latents.float().cpu())


def write_prediction_video(vae, batch: dict, future: torch.Tensor, path: Path, fps: float = 4.0) -> float:
    """Side-by-side mp4 (top: truth, bottom: prediction) of sample 0; returns the PSNR."""
    from uva_io.video import write_mp4

    views = {}
    if batch.get("view_mask") is not None and future.ndim == 6:  # the cameras sample 0 has
        views = {"index": batch["view_mask"][0].bool().nonzero().flatten().cpu()}

    def seen(x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, views["index"].to(x.device)) if views else x

    hist = decode_video(vae, seen(batch["history"][0]))
    truth = torch.cat([hist, decode_video(vae, seen(batch["future"][0]))])
    pred = torch.cat([hist, decode_video(vae, seen(future[0]))])
    value = psnr(pred[len(hist):], truth[len(hist):])
    frames = torch.cat([truth, pred], dim=2)  # stack vertically: (T, 3, 2H, W)
    frames = ((frames.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    write_mp4(path, np.ascontiguousarray(frames), fps)
    return value


def mean_metrics(per_batch: list[dict]) -> dict:
    """Each metric averaged over the batches that report it (``val/action_mse`` is absent from a
    batch without actions)."""
    keys = dict.fromkeys(k for m in per_batch for k in m)
    return {k: float(np.mean([m[k] for m in per_batch if k in m])) for k in keys}


class Validator:
    """Runs ``evaluate`` on ``cfg.eval_batches`` held-out batches every ``cfg.eval_every`` steps
    and reports the means. Each evaluation reads a fresh held-out stream seeded by its step (so a
    resumed run evaluates the same batches as an uninterrupted one); the VAE is loaded at the
    first evaluation, and the prediction video shows the first batch."""

    def __init__(self, cfg, rank: int, world_size: int, device, bf16: bool, tracker):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.device, self.bf16, self.tracker = device, bf16, tracker
        self.vae = None

    def due(self, step: int) -> bool:
        return bool(self.cfg.eval_every) and (step % self.cfg.eval_every == 0 or step == self.cfg.total_steps)

    def _batches(self, step: int) -> list[dict]:
        from pipeline.data import make_loader, merged_stats

        cfg = self.cfg
        data = replace(cfg.data, sources=cfg.eval_sources or cfg.data.sources, seed=cfg.data.seed + 1 + step,
                       num_workers=0, augment_shift=0)  # held-out windows as they are
        # held-out actions are normalized with the training statistics
        loader = make_loader(data, cfg.eval_batch_size, self.rank, self.world_size, stats=merged_stats(cfg.data.sources))
        batches = list(itertools.islice(iter(loader), cfg.eval_batches))
        for batch in batches:
            batch.pop("__state__", None)
        return batches

    def run(self, model: UVA, step: int) -> dict:
        from pipeline.data import batch_to_device

        cfg = self.cfg
        if self.rank == 0 and cfg.eval_vae and self.vae is None:
            from uva_io.vae_bundle import load_vae

            self.vae = load_vae(cfg.eval_vae)
        generator = rng.generator(cfg.seed + step, self.device)  # one draw sequence through all batches
        per_batch, first = [], None
        for batch in self._batches(step):
            batch = batch_to_device(batch, self.device)
            res = evaluate(model, batch, cfg.eval_sampling_steps, cfg.eval_iters, generator)
            per_batch.append(res["metrics"])
            if first is None:
                first = (batch, res["future"])
        metrics = mean_metrics(per_batch)
        if self.vae is not None:
            path = Path(cfg.run_dir) / "eval" / f"prediction_step{step:07d}.mp4"
            path.parent.mkdir(exist_ok=True)
            metrics["val/video_psnr"] = write_prediction_video(self.vae, *first, path)
            self.tracker.artifact(path)
        self.tracker.log(metrics, step)
        if self.rank == 0:
            print(f"[eval] step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())), flush=True)
        return metrics
