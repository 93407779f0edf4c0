"""Make tests/fixtures/reference: a small UVA checkpoint written by the reference's own code, and
what the reference's own code computes from it. Run once; CI never runs it (it needs the
reference's code and packages, the tests need only its outputs).

    reference: github.com/ShuangLI59/unified_video_action at 288e154ed70ab7f6a3a9198574c5a75032a195fd
    packages:  torch 2.13 (CPU), timm 0.9.7, hydra-core 1.3.2, omegaconf 2.3.0, dill, einops, scipy,
               zarr 2.18 (its normalizer imports it); transformers only as an import (PushT has
               no language)

    PYTHONPATH=/path/to/unified_video_action[:stub dir with an empty transformers] \\
        python scripts/make_reference_fixtures.py --out tests/fixtures/reference

What is written:
    uva_pusht_small.ckpt   the reference's PushT configuration at a small size (width 32, two
                           blocks, heads of width 32; the VAE with 32 base channels and no channel
                           growth), random weights, saved by the reference's BaseWorkspace.save_checkpoint
                           with model, EMA model (different weights) and optimizer, the way its
                           training workspace writes ``latest.ckpt``
    outputs.safetensors    inputs and outputs of the reference's code with the EMA weights:
                           (i) decoder features for four task modes, (ii) each diffusion network's
                           output, and the action condition the action sampler computes, (iii) a
                           whole ``predict_action`` call with every random draw recorded
    outputs.json           shapes, settings and what was held fixed

Held fixed so the outputs are a function of the inputs: attention dropout off (timm 0.9.7 applies
it even in eval mode), the VAE posterior's mean instead of a sample (``predict_action`` samples
it), and every ``torch.randn`` / ``randn_like`` of the sampler drawn from a recorded sequence.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import subprocess
from pathlib import Path

import numpy as np
import torch

COMMIT = "288e154ed70ab7f6a3a9198574c5a75032a195fd"
WIDTH, DEPTH, HEADS, HEAD_W, HEAD_D, VAE_CH = 32, 2, 2, 32, 2, 32


def reference_config():
    from hydra import compose, initialize_config_dir

    import unified_video_action

    cfg_dir = Path(list(unified_video_action.__path__)[0]) / "config"
    p = "policy.autoregressive_model_params."
    with initialize_config_dir(config_dir=str(cfg_dir), version_base=None):
        cfg = compose("uva_pusht", overrides=[
            "model.policy.action_model_params.predict_action=True",
            f"model.{p}model_size=mar_fixture", f"model.{p}pretrained_model_path=null",
            f"model.{p}diffloss_d={HEAD_D}", f"model.{p}diffloss_w={HEAD_W}",
            f"model.{p}diffloss_act_d={HEAD_D}", f"model.{p}diffloss_act_w={HEAD_W}",
            "model.policy.vae_model_params.autoencoder_path=null",
            "model.policy.vae_model_params.ddconfig.ch_mult=[1,1,1,1,1]",
        ])
    return cfg


def build_policy(cfg):
    import torch.nn as nn

    from unified_video_action.model.autoregressive import mar_con_unified as mar
    from unified_video_action.vae import vaekl

    def mar_fixture(**kw):  # the reference's MAR class at a small width and depth
        return mar.MAR(encoder_embed_dim=WIDTH, encoder_depth=DEPTH, encoder_num_heads=HEADS,
                       decoder_embed_dim=WIDTH, decoder_depth=DEPTH, decoder_num_heads=HEADS, mlp_ratio=4,
                       norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), **kw)

    mar.mar_fixture = mar_fixture
    vaekl.Encoder = functools.partial(vaekl.Encoder, ch=VAE_CH)  # base channels (the config has no key)
    vaekl.Decoder = functools.partial(vaekl.Decoder, ch=VAE_CH)
    import hydra

    # as the reference's TrainUnifiedVideoActionWorkspace builds it
    return hydra.utils.instantiate(cfg.model.policy, task_name=cfg.task.name, task_modes=cfg.task.task_modes,
                                   normalizer_type=cfg.task.dataset.normalizer_type, language_emb_model=None)


def randomize(module: torch.nn.Module, gen: torch.Generator, scale: float = 0.05) -> None:
    """Every parameter random (the zero-initialized gates and outputs too), so each one matters."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale + (1.0 if p.ndim == 1 and p.numel() > 0 and
                                                                   torch.all(p == 1) else 0.0))


def fit_normalizer(gen):
    from unified_video_action.common.normalize_util import get_image_range_normalizer  # as the PushT dataset
    from unified_video_action.model.common.normalizer import LinearNormalizer

    action = torch.rand(500, 2, generator=gen) * torch.tensor([400.0, 380.0]) + torch.tensor([60.0, 70.0])
    state = torch.rand(500, 2, generator=gen) * torch.tensor([420.0, 400.0]) + torch.tensor([40.0, 50.0])
    normalizer = LinearNormalizer()
    normalizer.fit(data={"action": action, "agent_pos": state}, last_n_dims=1, mode="limits")
    normalizer["image"] = get_image_range_normalizer()
    return normalizer


class Draws:
    """torch.randn / randn_like from one generator, every draw recorded in order."""

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)
        self.draws: list[torch.Tensor] = []
        self.randn, self.randn_like = torch.randn, torch.randn_like

    def _draw(self, shape):
        x = self.randn(*shape, generator=self.gen)
        self.draws.append(x.clone())
        return x

    def __enter__(self):
        torch.randn = lambda *shape, **kw: self._draw(shape[0] if len(shape) == 1 and not isinstance(shape[0], int)
                                                      else shape)
        torch.randn_like = lambda x, **kw: self._draw(x.shape).to(x.dtype)
        return self

    def __exit__(self, *exc):
        torch.randn, torch.randn_like = self.randn, self.randn_like


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.Tensor.cuda = lambda self, *a, **k: self  # the samplers call .cuda(); this is a CPU run
    gen = torch.Generator().manual_seed(0)
    cfg = reference_config()
    policy = build_policy(cfg)
    randomize(policy, gen)
    policy.set_normalizer(fit_normalizer(gen))
    ema = copy.deepcopy(policy)
    randomize(ema.model, gen)  # the EMA weights differ: the import must take them
    randomize(ema.vae_model, gen)
    from unified_video_action.workspace.base_workspace import BaseWorkspace

    ws = BaseWorkspace(cfg, output_dir=str(out))
    ws.model, ws.ema_model = policy, ema
    ws.optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    ckpt = out / "uva_pusht_small.ckpt"
    ws.save_checkpoint(path=ckpt, use_thread=False)

    model = ema.model.eval()
    for block in [*model.encoder_blocks, *model.decoder_blocks]:
        block.attn.attn_drop.p = 0.0  # timm 0.9.7 drops attention weights in eval mode too
    ema.eval()
    from einops import rearrange

    T, S, C, B = 4, 256, 16, 2
    o: dict[str, torch.Tensor] = {}
    cond = torch.randn(B, T, C, 16, 16, generator=gen)
    fut = torch.randn(B, T, C, 16, 16, generator=gen)
    nact = torch.rand(B, 16, 2, generator=gen) * 2 - 1
    o["cond"], o["future"], o["actions"] = cond, fut, nact

    def tokens(x):
        return rearrange(model.patchify(rearrange(x, "b t c h w -> (b t) c h w")), "(b t) s c -> b t s c", b=B)

    spatial = (torch.rand(B, S, generator=gen) < 0.7).float()
    partial = spatial[:, None].expand(B, T, S).contiguous()
    with torch.no_grad():
        for mode, mask in (("policy_model", torch.ones(B, T, S)), ("video_model", partial),
                           ("dynamic_model", partial), ("inverse_model", torch.zeros(B, T, S))):
            x = model.forward_mae_encoder(tokens(fut), mask, tokens(cond), None, None, nact, task_mode=mode)
            o[f"z_{mode}"] = model.forward_mae_decoder(x, mask)
            o[f"mask_{mode}"] = mask
        # (ii) the diffusion networks: the video head on token rows, the action head on the
        # condition its sampler computes from the decoder features
        z = o["z_dynamic_model"]
        rows = 64
        xt = torch.randn(rows, C, generator=gen)
        t = torch.randint(0, 1000, (rows,), generator=gen)
        zc = z.reshape(-1, WIDTH)[torch.randperm(B * T * S, generator=gen)[:rows]]
        o["video_x"], o["video_t"], o["video_c"] = xt, t, zc
        o["video_out"] = model.diffloss.net(xt, t, zc)
        act = model.diffactloss
        h = rearrange(z, "b (t s) c -> (b t) s c", t=T)
        h = rearrange(rearrange(h, "b (w h) c -> b w h c", w=16), "b w h c -> b c w h")
        h = act.fc(rearrange(act.conv(h), "b c w h -> b (c w h)"))
        h = act.refine(act.interpolate(rearrange(h, "(b t) c -> b t c", t=T).permute(0, 2, 1)).permute(0, 2, 1))
        o["action_cond"] = h  # (B, 16, width)
        ax = torch.randn(B * 16, 2, generator=gen)
        at = torch.randint(0, 1000, (B * 16,), generator=gen)
        o["action_x"], o["action_t"] = ax, at
        o["action_out"] = act.net(ax, at, rearrange(h, "b t c -> (b t) c"))
        # (iii) a whole policy call: 16 PushT frames of 96 px, every draw recorded
        frames = torch.randint(0, 256, (1, 16, 3, 96, 96), generator=gen, dtype=torch.uint8)
        agent_pos = torch.rand(1, 16, 2, generator=gen) * 400 + 50
        o["obs_frames"], o["obs_agent_pos"] = frames, agent_pos
        from unified_video_action.vae import vaekl

        vaekl.DiagonalGaussianDistribution.sample = lambda self: self.mean  # deterministic posterior
        with Draws(seed=1) as draws:
            result = ema.predict_action({"image": frames.float() / 255.0, "agent_pos": agent_pos.clone()})
        o["policy_action_pred"], o["policy_action"] = result["action_pred"], result["action"]
        o["policy_noise"] = torch.stack(draws.draws)  # (steps + 1, 16, 2): the start, then each step's
    from safetensors.torch import save_file

    save_file({k: v.clone().contiguous() for k, v in o.items()}, str(out / "outputs.safetensors"))
    import timm

    meta = {"reference_commit": COMMIT, "timm": timm.__version__, "torch": torch.__version__,
            "size": {"width": WIDTH, "depth": DEPTH, "heads": HEADS, "head_width": HEAD_W, "head_depth": HEAD_D,
                     "vae_ch": VAE_CH, "vae_ch_mult": [1, 1, 1, 1, 1]},
            "weights": "ema_model", "held_fixed": ["attention dropout off", "VAE posterior mean",
                                                   "sampler draws recorded in policy_noise"],
            "shapes": {k: list(v.shape) for k, v in o.items()},
            "written_by": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                         cwd=Path(__file__).parent).stdout.strip() or None}
    (out / "outputs.json").write_text(json.dumps(meta, indent=1))
    print(f"wrote {ckpt} ({ckpt.stat().st_size / 1e6:.1f} MB) and {out / 'outputs.safetensors'}")


if __name__ == "__main__":
    np.random.seed(0)
    main()
