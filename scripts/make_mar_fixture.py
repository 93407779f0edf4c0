"""Make tests/fixtures/mar/checkpoint-last.pth: a small MAR checkpoint written by MAR's own code
(github.com/LTH14/mar at fe470ac24afbee924668d8c5c83e9fec60af3a73: ``models.mar.MAR`` and
``util.misc.save_model``), random weights, EMA weights different from the raw ones. Run once; CI
only reads the file.

    PYTHONPATH=/path/to/mar python scripts/make_mar_fixture.py --out tests/fixtures/mar

The size: 64 px images (a 4 x 4 token grid, so an import to another grid resizes the position
tables), width 32, two encoder and two decoder blocks, a diffusion MLP of width 32 and depth 2.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch
import torch.nn as nn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    from models.mar import MAR
    from util import misc

    model = MAR(img_size=64, vae_stride=16, patch_size=1, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2, mlp_ratio=4.0,
                norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), vae_embed_dim=16, buffer_size=64,
                diffloss_d=2, diffloss_w=32)
    with torch.no_grad():  # every parameter random, so every mapped one is checked
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ema = [p.detach().clone() + 0.01 * torch.randn_like(p) for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    args = argparse.Namespace(model="mar_fixture", img_size=64, vae_stride=16, patch_size=1, vae_embed_dim=16,
                              diffloss_d=2, diffloss_w=32, buffer_size=64, output_dir=str(out), epoch=0)
    misc.save_model(args=args, epoch=0, model=model, model_without_ddp=model, optimizer=optimizer,
                    loss_scaler=misc.NativeScalerWithGradNormCount(), ema_params=ema, epoch_name="last")
    print(f"wrote {out / 'checkpoint-last.pth'}")


if __name__ == "__main__":
    main()
