"""Pretraining from a MAR-layout initialization beside random initialization (the paper's stage 1).

    python benchmarks/bench_mar_init.py --mar-checkpoint runs/mar_init/mar/checkpoint-last.pth \\
        --sets runs/value/latents --out runs/mar_init --steps 400

Both arms: the CPU default model (configs/pretrain/default.yaml) in MAR's layout (patch 1,
per-stream embedding, input LayerNorm, exact GELU, the action condition with the video positions,
tube masks), one view, no language, video only (stage 1), the same data order and seeds, trained
on the PushT task video, the synthetic pusher and the 25 PushT demos (their frames; video only)
from ``--sets`` (bench_pretraining_value.py's shard sets). The ``mar`` arm starts from ``uva-import mar CKPT``; ``random`` from the model's init.
Prints the training loss and the in-training held-out metrics (video latent MSE on ``heldout_s0``)
at each evaluation, and the ratio of the two arms.

Real MAR weights (ImageNet) cannot be downloaded on the machine these numbers come from:
``scripts/train_mar_on_frames.py`` trains MAR's own code on frames of the same sets to stand in
(a checkpoint laid out and written exactly as MAR's); with a downloaded MAR-B checkpoint use
``--size uva-B`` and the MAR recipe configs instead.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_pretraining_value import BIN, once  # noqa: E402

LAYOUT = {"patch_size": 1, "embed_style": "streams", "embed_norm": "true", "mlp_act": "gelu",
          "action_pos": "true", "mask_kind": "tube", "lang_dim": 0}


def run(args, arm: str, init: Path | None) -> Path:
    sets = Path(args.sets)
    # the 25 PushT demos too, so the held-out set's robot has statistics (video only all the same)
    srcs = (f"[{{path: {sets / 'taskvideo'}, weight: 2.0}}, {{path: {sets / 'pusher'}, weight: 1.0}}, "
            f"{{path: {sets / 'target25_s0'}, weight: 1.0}}]")
    folder = Path(args.out) / arm
    cmd = [str(BIN / "uva-pretrain"), "--config", "configs/pretrain/default.yaml",
           "--set", f"data.sources={srcs}", "--set", "data.num_views=1", "--set", "mode_weights={video: 1.0}",
           "--set", f"eval_sources=[{{path: {sets / 'heldout_s0'}}}]", "--set", f"eval_every={args.eval_every}",
           "--set", f"total_steps={args.steps}", "--set", f"checkpoint_every={args.steps}",
           "--set", f"run_dir={folder}", "--set", f"seed={args.seed}",
           *[x for k, v in LAYOUT.items() for x in ("--set", f"model.overrides.{k}={v}")]]
    if init is not None:
        cmd += ["--set", f"init_from={init}"]
    once(folder, cmd, (sets / "taskvideo" / "index.json", *((init,) if init else ())))
    return folder.with_name(folder.name + ".log")


def curves(log: Path) -> tuple[dict[int, float], dict[int, dict[str, float]]]:
    loss, evals = {}, {}
    for line in log.read_text().splitlines():
        if m := re.match(r"\[train\] step (\d+)/\d+ loss ([\d.]+)", line):
            loss[int(m.group(1))] = float(m.group(2))
        elif m := re.match(r"\[eval\] step (\d+): (.*)", line):
            evals[int(m.group(1))] = {k: float(v) for k, v in (kv.rsplit(" ", 1) for kv in m.group(2).split(", "))}
    return loss, evals


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mar-checkpoint", required=True)
    p.add_argument("--sets", default="runs/value/latents")
    p.add_argument("--out", default="runs/mar_init")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    init = out / "mar_init.safetensors"
    sets = [f"{k}={v}" for k, v in {"latent_channels": 16, "latent_size": 12, "width": 128, "decoder_width": 128,
                                    "num_heads": 4, "encoder_depth": 3, "decoder_depth": 3, "head_width": 128,
                                    "action_head_width": 128, "head_depth": 3, "action_head_depth": 3,
                                    "action_dim": 8, "num_history": 2, "num_future": 2,
                                    "action_horizon": 8, **LAYOUT}.items()]
    once(out / "import", [str(BIN / "uva-import"), "mar", args.mar_checkpoint, "--size", "uva-tiny",
                          "--output", str(init), "--set", *sets], (Path(args.mar_checkpoint),))
    logs = {arm: run(args, arm, init if arm == "mar" else None) for arm in ("random", "mar")}
    data = {arm: curves(log) for arm, log in logs.items()}
    steps = sorted(set(data["random"][0]) & set(data["mar"][0]))
    print(f"{'step':>6} {'loss random':>12} {'loss mar':>10} {'ratio':>6}")
    for s in steps:
        if s % args.eval_every == 0 or s == steps[0]:
            a, b = data["random"][0][s], data["mar"][0][s]
            print(f"{s:>6} {a:>12.4f} {b:>10.4f} {b / a:>6.2f}")
    keys = sorted(set().union(*(e for ev in data["random"][1].values() for e in [ev])))
    for k in keys:
        if "video" not in k and "loss" not in k:
            continue
        for s in sorted(data["random"][1]):
            a = data["random"][1][s].get(k)
            b = data["mar"][1].get(s, {}).get(k)
            if a is not None and b is not None:
                print(f"EVAL step={s} {k} random={a:.4f} mar={b:.4f} ratio={b / a:.2f}")


if __name__ == "__main__":
    main()
