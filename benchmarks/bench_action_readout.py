"""Does the action head use the image? Policy-only training on a latent shard set, per readout.

Trains the embedded default's model from scratch on the policy mode alone (uniform windows from
the set's episodes, the last ``--val-episodes`` held out) once per ``--readout-dims`` value and
prints, every ``--eval-every`` steps: the held-out sampled-chunk MSE (normalized units), the same
with the history frames shuffled across the batch (proprioception kept: an action condition that
ignores the image scores the same on both), the batch-mean baseline, and the first action's MSE.
``--export DIR`` writes each trained model as a policy bundle (``pipeline.export.export_bundle``:
the robot from the registry, the set's statistics, the VAE the set was encoded with) for ``uva-eval``.

    python benchmarks/bench_action_readout.py --data runs/default/latents/pusht --readout-dims 0,8 --steps 4000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import yaml

from pipeline.data import WindowConfig, cut_windows
from pipeline.export import export_bundle
from pipeline.robots import RobotConfig, load_robot, normalize_actions
from uva import UVA, model_config
from uva.modes import MODE_INDEX, mode_weights_tensor
from uva_io.shardset import iter_tar_samples


def load_windows(root: Path, robot: RobotConfig, stats: dict, w: WindowConfig, val: int):
    """(history, future, actions, proprio) windows of the set's episodes, normalized as the
    loader does; the last ``val`` episodes held out."""
    mode, mask = robot.normalization, robot.norm_mask()
    episodes = []
    for tar in sorted(root.glob("*.tar")):
        for s in iter_tar_samples(tar):
            act = normalize_actions(s["actions.npy"], stats, mode, mask).astype(np.float32)
            pro = (normalize_actions(s["proprio.npy"], stats["proprio"], mode).astype(np.float32)
                   if "proprio.npy" in s and "proprio" in stats else None)
            episodes.append((s["latents.main.npy"].astype(np.float32), act, pro))
    if len(episodes) <= val:
        raise ValueError(f"{root}: {len(episodes)} episodes, need more than --val-episodes={val}")

    def cut(eps):
        return [(x["history"], x["future"], x["actions"], x.get("proprio"))
                for lat, act, pro in eps for x in cut_windows(lat, act, w, pro)]

    return cut(episodes[:-val]), cut(episodes[-val:])


def stack(windows, idx):
    cols = list(zip(*(windows[i] for i in idx)))
    return [None if c[0] is None else torch.from_numpy(np.stack(c)) for c in cols]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="runs/default/latents/pusht")
    p.add_argument("--robot", default="pusht", help="robot of the set (configs/robots): normalization and bundle")
    p.add_argument("--config", default="configs/pretrain/default.yaml", help="model size and overrides")
    p.add_argument("--readout-dims", default="0,8", help="comma list of model.action_readout_dim values")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--val-episodes", type=int, default=8)
    p.add_argument("--window", default="2,2,4,8", help="history,future,frame_stride,action_horizon")
    p.add_argument("--export", default=None, help="write a bundle per readout under this folder")
    p.add_argument("--vae", default=None, help="VAE the set was encoded with (default: the one its index names)")
    args = p.parse_args()
    th, tf, stride, horizon = (int(x) for x in args.window.split(","))
    window = WindowConfig(num_history=th, num_future=tf, frame_stride=stride, action_horizon=horizon)
    window.validate()
    robot = load_robot(args.robot)
    stats = json.loads((Path(args.data) / "stats.json").read_text())[robot.name]
    train, val = load_windows(Path(args.data), robot, stats, window, args.val_episodes)
    has_proprio = train[0][3] is not None
    print(f"# {time.strftime('%Y-%m-%d')} {platform.node()} cpus={os.cpu_count()} torch={torch.__version__} "
          f"{args.data}: {len(train)} train / {len(val)} held-out windows, proprio={has_proprio}", flush=True)
    model_cfg = yaml.safe_load(Path(args.config).read_text())["model"]
    rng = np.random.default_rng(0)
    vb = stack(val, rng.choice(len(val), min(256, len(val)), replace=False))
    n = len(vb[0])
    base = ((vb[2] - vb[2].mean(0)) ** 2).mean().item()
    for dim in (int(x) for x in args.readout_dims.split(",")):
        torch.manual_seed(0)
        cfg = model_config(model_cfg["size"], **{**model_cfg.get("overrides", {}), "num_history": th,
                                                  "num_future": tf, "action_horizon": horizon,
                                                  "action_dim": train[0][2].shape[-1],
                                                  "proprio_dim": train[0][3].shape[-1] if has_proprio else 0,
                                                  "action_readout_dim": dim})
        model = UVA(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.02)
        weights = mode_weights_tensor({"policy": 1.0})
        modes = torch.full((args.batch,), MODE_INDEX["policy"])
        step_rng = np.random.default_rng(1)
        t0 = time.time()
        for step in range(1, args.steps + 1):
            for g in opt.param_groups:
                g["lr"] = args.lr * min(1.0, step / 50)
            b = stack(train, step_rng.integers(0, len(train), args.batch))
            out = model(b[0], b[1], b[2], torch.ones(args.batch, dtype=torch.bool), weights, proprio=b[3], modes=modes)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            if step % args.eval_every and step != args.steps:
                continue
            model.eval()
            with torch.no_grad():
                pred = model.predict_action(vb[0], num_steps=16, proprio=vb[3], generator=torch.Generator().manual_seed(0))
                perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
                shuf = model.predict_action(vb[0][perm], num_steps=16, proprio=vb[3],
                                            generator=torch.Generator().manual_seed(0))
            model.train()
            mse = ((pred - vb[2]) ** 2).mean().item()
            print(f"readout {dim}: step {step} loss {out['loss'].item():.4f} held-out mse {mse:.3f} "
                  f"shuffled-image {((shuf - vb[2]) ** 2).mean().item():.3f} batch-mean {base:.3f} "
                  f"first action {((pred[:, 0] - vb[2][:, 0]) ** 2).mean().item():.3f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
        if args.export:
            write_bundle(model, Path(args.export) / f"readout{dim}", Path(args.data), args.vae, robot, stats, window)


def write_bundle(model: UVA, out: Path, data: Path, vae: str | None, robot: RobotConfig, stats: dict,
                 window: WindowConfig) -> None:
    from safetensors.torch import save_file

    index = json.loads((data / "index.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
        export_bundle(out, weights, asdict(model.cfg), robot, stats,
                      {k: getattr(window, k) for k in ("num_history", "num_future", "frame_stride", "action_horizon")},
                      vae or index["config"]["vae"], index["vae"], source={"benchmark": "bench_action_readout.py"},
                      proprio_stats=stats.get("proprio"))
    print(f"bundle -> {out}", flush=True)

if __name__ == "__main__":
    main()
