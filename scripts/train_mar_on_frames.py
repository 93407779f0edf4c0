"""Train MAR's own model (github.com/LTH14/mar, ``models.mar.MAR``, its loss and its ``save_model``)
on single-frame latents, as a stand-in for its ImageNet checkpoint where that cannot be
downloaded: a ``checkpoint-last.pth`` laid out exactly as MAR writes it, whose weights have
learned to generate frames (one class, label 0).

    PYTHONPATH=/path/to/mar python scripts/train_mar_on_frames.py --frames frames.npy --out runs/mar \\
        --width 128 --depth 3 --heads 4 --head-width 128 --head-depth 3 --steps 600

``frames.npy``: (N, C, S, S) float latents (benchmarks/bench_mar_init.py writes them from shards).
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-width", type=int, default=128)
    p.add_argument("--head-depth", type=int, default=3)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    from models.mar import MAR
    from util import misc

    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    frames = torch.from_numpy(np.load(a.frames)).float()
    n, c, s, _ = frames.shape
    model = MAR(img_size=s * 16, vae_stride=16, patch_size=1, encoder_embed_dim=a.width, encoder_depth=a.depth,
                encoder_num_heads=a.heads, decoder_embed_dim=a.width, decoder_depth=a.depth,
                decoder_num_heads=a.heads, mlp_ratio=4.0, norm_layer=functools.partial(nn.LayerNorm, eps=1e-6),
                vae_embed_dim=c, class_num=1, buffer_size=64, diffloss_d=a.head_depth, diffloss_w=a.head_width,
                diffusion_batch_mul=4)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.02)
    ema = [q.detach().clone() for q in model.parameters()]
    torch.Tensor.cuda = lambda self, *x, **k: self  # MAR's label dropout calls .cuda(); a CPU run
    t0 = time.time()
    for step in range(1, a.steps + 1):
        idx = torch.randint(0, n, (a.batch,))
        loss = model(frames[idx], torch.zeros(a.batch, dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, q in zip(ema, model.parameters()):
                e.mul_(0.999).add_(q.detach(), alpha=0.001)
        if step % 50 == 0 or step == a.steps:
            print(f"[mar] step {step}/{a.steps} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(model="mar_frames", img_size=s * 16, vae_stride=16, patch_size=1, vae_embed_dim=c,
                              diffloss_d=a.head_depth, diffloss_w=a.head_width, buffer_size=64, output_dir=str(out),
                              steps=a.steps, frames=a.frames)
    misc.save_model(args=args, epoch=a.steps, model=model, model_without_ddp=model, optimizer=opt,
                    loss_scaler=misc.NativeScalerWithGradNormCount(), ema_params=ema, epoch_name="last")
    print(f"[mar] wrote {out / 'checkpoint-last.pth'}")


if __name__ == "__main__":
    main()
