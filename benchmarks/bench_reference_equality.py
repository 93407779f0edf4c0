"""How exactly an imported UVA reference checkpoint computes what the reference computes.

    python benchmarks/bench_reference_equality.py [--checkpoint CKPT --outputs OUTPUTS --num-heads N]

Defaults: the committed fixture (tests/fixtures/reference, written and evaluated by the reference's
own code, scripts/make_reference_fixtures.py). Prints the largest absolute difference of (i) the
decoder features in each task mode, (ii) each diffusion network's output and the action condition,
(iii) a whole policy call with the reference's draws supplied, in model units and robot units.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(ROOT / "tests/fixtures/reference/uva_pusht_small.ckpt"))
    p.add_argument("--outputs", default=str(ROOT / "tests/fixtures/reference/outputs.safetensors"))
    p.add_argument("--num-heads", type=int, default=2)
    a = p.parse_args()
    from pipeline.import_weights import import_reference
    from pipeline.policy import load_policy
    from uva import UVA
    from uva.config import UVAConfig

    o = load_file(a.outputs)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        import_reference(a.checkpoint, bundle, num_heads=a.num_heads)
        meta = json.loads((bundle / "policy.json").read_text())
        model = UVA(UVAConfig(**meta["model_config"]))
        model.load_state_dict(load_file(str(bundle / "model.safetensors")))
        model.eval()
        b = o["cond"].shape[0]
        with torch.no_grad():
            for mode in ("policy_model", "video_model", "dynamic_model", "inverse_model"):
                dyn = mode == "dynamic_model"
                video, action = model.features(
                    o["cond"], o["future"], o[f"mask_{mode}"].reshape(b, -1).bool(), o["actions"] if dyn else None,
                    torch.full((b,), dyn), history_visible=torch.zeros(b, dtype=torch.bool)
                    if mode == "inverse_model" else None)
                rows[f"(i) decoder features, {mode}"] = (video - o[f"z_{mode}"]).abs().max().item()
                if dyn:
                    rows["(ii) action condition"] = (action - o["action_cond"]).abs().max().item()
            rows["(ii) video head output"] = (model.video_head(o["video_x"], o["video_t"], o["video_c"])
                                              - o["video_out"]).abs().max().item()
            rows["(ii) action head output"] = (model.action_head(o["action_x"], o["action_t"],
                                                                 o["action_cond"].flatten(0, 1))
                                               - o["action_out"]).abs().max().item()
        policy = load_policy(bundle)
        steps = policy.sampling_steps
        frames = o["obs_frames"][0].permute(0, 2, 3, 1).numpy()
        got = policy.predict(frames[3::4], noise=o["policy_noise"][:steps].reshape(steps, 1, -1))
        want = o["policy_action_pred"][0].numpy()
        s = policy.stats
        norm = lambda x: x * np.asarray(s["scale"]) + np.asarray(s["offset"])  # noqa: E731
        rows["(iii) policy call, model units"] = float(np.abs(norm(got) - norm(want)).max())
        rows["(iii) policy call, robot units (px)"] = float(np.abs(got - want).max())
        rows["(iii) largest action, robot units (px)"] = float(np.abs(want).max())
    for name, value in rows.items():
        print(f"{name:45s} {value:.3e}")


if __name__ == "__main__":
    main()
