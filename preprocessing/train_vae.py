"""Train a small KL-VAE on frames of given videos; write safetensors + JSON with held-out PSNR.

No pretrained VAE can be downloaded here, so the embedded default trains its own:

    uva-train-vae --manifest data/synthetic/manifest.jsonl \
        --video-folder human/ --preset kl8-small --steps 1500 --output artifacts/vae/vae.safetensors

Frames are sampled from every input video (resized/cropped like the encoder does), 5% are held
out, and the report (PSNR on held-out frames, latent std) is stored in the bundle's JSON.
The latent scale is set so that scaled latents have unit standard deviation.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

from preprocessing.sources import read_manifest, read_video_folder
from uva.vae import VAE_PRESETS, AutoencoderKL, VAEConfig
from uva_io.vae_bundle import frames_to_pixels, save_vae
from uva_io.video import DecodeError, read_clip


def collect_frames(paths: list[str], size: int, fps: float | None, max_frames: int) -> np.ndarray:
    """Frames (N, size, size, 3) uint8, spread evenly over all readable videos."""
    per_video = max(1, max_frames // max(1, len(paths)))
    chunks = []
    for path in paths:
        try:
            clip = read_clip(path, fps, size)
        except DecodeError as err:
            print(f"[train_vae] skipping {err}", flush=True)
            continue
        f = clip.frames
        if len(f) > per_video:
            f = f[np.linspace(0, len(f) - 1, per_video).round().astype(int)]
        chunks.append(f)
    if not chunks:
        raise ValueError("no readable frames in the given inputs")
    return np.concatenate(chunks)


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = F.mse_loss(x.clamp(-1, 1), y).item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def train(frames: np.ndarray, cfg: VAEConfig, steps: int, batch_size: int, lr: float,
          kl_weight: float, seed: int, log_every: int = 100) -> tuple[AutoencoderKL, dict]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(frames))
    num_val = max(8, len(frames) // 20)
    val, tr = frames[order[:num_val]], frames[order[num_val:]]
    model = AutoencoderKL(VAEConfig(**{**asdict(cfg), "scale": 1.0}))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    start = time.time()
    for step in range(1, steps + 1):
        idx = rng.integers(0, len(tr), batch_size)
        x = frames_to_pixels(tr[idx])
        if rng.random() < 0.5:
            x = x.flip(-1)  # horizontal flip: cheap augmentation
        recon, mean, logvar = model(x)
        rec = (recon - x).abs().mean() + F.mse_loss(recon, x)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        loss = rec + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps:
            print(f"[train_vae] step {step}/{steps} rec {rec.item():.4f} kl {kl.item():.3f} "
                  f"({time.time() - start:.0f}s)", flush=True)
    model.eval()
    with torch.no_grad():
        xv = frames_to_pixels(val)
        mean, _ = model.moments(xv)
        recon = model.decoder(model.post_quant_conv(mean))
        val_psnr = psnr(recon, xv)
        latent_std = float(mean.std())
    model.config.scale = 1.0 / latent_std  # scaled latents have unit std, like kl16's 0.2325
    report = {"val_psnr_db": round(val_psnr, 2), "latent_std": latent_std, "num_train_frames": len(tr),
              "num_val_frames": len(val), "steps": steps, "seconds": round(time.time() - start, 1)}
    return model, report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="uva-train-vae", description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", action="append", default=[])
    p.add_argument("--video-folder", action="append", default=[])
    p.add_argument("--output", required=True, help="bundle path (.safetensors; .json is written beside)")
    p.add_argument("--preset", default="kl8-small", choices=sorted(VAE_PRESETS))
    p.add_argument("--resolution", type=int, default=96)
    p.add_argument("--fps", type=float, default=None, help="sample videos at this rate (default: source)")
    p.add_argument("--max-frames", type=int, default=4000)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = []
    for m in args.manifest:
        paths += [v for ep in read_manifest(m)[0] for v in ep.videos.values()]
    for folder in args.video_folder:
        paths += [v for ep in read_video_folder(folder)[0] for v in ep.videos.values()]
    if not paths:
        p.error("give videos with --manifest and/or --video-folder")
    frames = collect_frames(paths, args.resolution, args.fps, args.max_frames)
    print(f"[train_vae] {len(frames)} frames from {len(paths)} videos", flush=True)
    model, report = train(frames, VAE_PRESETS[args.preset], args.steps, args.batch_size, args.lr,
                          args.kl_weight, args.seed)
    report["preset"] = args.preset
    path = save_vae(model, args.output, report)
    print(f"[train_vae] held-out PSNR {report['val_psnr_db']:.2f} dB -> {path}", flush=True)


if __name__ == "__main__":
    main()
