"""The generated demonstration sets: the franka-shaped arm set's layout and meaning."""

from __future__ import annotations

import json

import numpy as np

from preprocessing.make_synthetic_demos import arm_points, main, make_arm_episode
from uva_io.video import read_clip


def test_franka_set_has_two_cameras_8d_actions_proprio_and_an_instruction(tmp_path):
    main(["--robot", "franka", "--output", str(tmp_path), "--num-episodes", "2", "--num-steps", "30", "--size", "32"])
    recs = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [r["episode_id"] for r in recs] == ["ep00000", "ep00001"]
    for r in recs:
        assert r["robot"] == "franka" and r["fps"] == 15 and set(r["video"]) == {"exterior", "wrist"}
        assert r["instruction"] in ("put the red block in the bowl", "put the blue block in the bowl")
        actions, state = np.load(tmp_path / r["actions"]), np.load(tmp_path / r["proprio"])
        assert actions.shape == state.shape == (30, 8) and set(np.unique(actions[:, 7])) <= {0.0, 1.0}
        for cam in ("exterior", "wrist"):
            assert read_clip(str(tmp_path / r["video"][cam]), None, 32).frames.shape == (30, 32, 32, 3)


def test_the_instruction_decides_which_block_the_arm_takes():
    """Same scene (same seed), two instructions: the gripper closes where the named block is,
    and that block ends in the bowl."""
    ends = {}
    for target in ("red", "blue"):
        demo = make_arm_episode(np.random.default_rng([0, 5]), 120, 32, target=target)
        assert demo["instruction"] == f"put the {target} block in the bowl"
        grip = demo["actions"][:, 7]
        closed = int(np.argmax(grip == 0))
        assert 0 < closed and grip[closed:].min() == 0 and grip[-1] == 1  # closes, then lets go
        hand = arm_points(demo["proprio"][closed, :7])[-1]
        other = "blue" if target == "red" else "red"
        assert np.linalg.norm(hand - demo["blocks"][target]) < 0.03 < np.linalg.norm(hand - demo["blocks"][other])
        ends[target] = demo["actions"][:, :7]
    assert np.abs(ends["red"] - ends["blue"]).max() > 0.3
