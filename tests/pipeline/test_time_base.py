"""Actions keep their robot's control rate: windows are cut in time (frames at the latent rate,
the action chunk in the robot's own rows), mixes take their widest robot's width, and a robot's
YAML must agree with the rate of its data."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data import DataConfig, WindowConfig, action_width, window_at
from preprocessing.encode import EncodeConfig, pack_sample
from preprocessing.sources import Episode
from uva_io.video import resample_indices

W = WindowConfig(num_history=2, num_future=2, frame_stride=2, action_horizon=4)


def episode(hz: float, seconds: float = 3.0, fps: float = 10.0):
    """Latents at ``fps`` of a ``hz`` recording and its control rows (row r = r)."""
    rows = int(hz * seconds)
    row_of = resample_indices(rows, hz, fps)  # the rows the encode keeps frames at
    latents = np.arange(len(row_of), dtype=np.float32)[:, None, None, None]
    actions = np.arange(rows, dtype=np.float32)[:, None].repeat(2, 1)
    return latents, actions, row_of


@pytest.mark.parametrize("hz", [5.0, 15.0, 50.0])
def test_the_chunk_is_the_robots_consecutive_rows_from_the_last_history_frame(hz):
    latents, actions, row_of = episode(hz)
    proprio = -actions
    win = window_at(latents, actions, W, 3, proprio=proprio, row_of=row_of)
    frames = 3 + 2 * np.arange(4)  # latent frames 3, 5 | 7, 9
    assert win["history"][:, 0, 0, 0].tolist() == frames[:2].tolist()
    row = row_of[frames[1]]
    assert win["actions"][:, 0].tolist() == list(range(row, row + 4))  # 4 rows at the robot's rate
    assert win["proprio"][:, 0].tolist() == (-row_of[frames[:2]]).tolist()
    # past the end of the episode the last row repeats
    last = window_at(latents, actions, W, len(latents) - 7, row_of=row_of)
    assert last["actions"][:, 0].max() <= len(actions) - 1


def test_a_shard_set_written_before_keeps_its_old_windows():
    latents = np.arange(20, dtype=np.float32)[:, None, None, None]
    actions = np.arange(20, dtype=np.float32)[:, None]
    spread = WindowConfig(num_history=2, num_future=2, frame_stride=4, action_horizon=4)  # 2 frames per action
    win = window_at(latents, actions, spread, 0, row_of=None)
    assert win["actions"][:, 0].tolist() == [4, 6, 8, 10]


def test_the_encode_stores_every_row_and_where_each_frame_is():
    enc = {"latents": {"main": np.zeros((30, 4, 2, 2), np.float16)},
           "arrays": {"actions": np.zeros((150, 3), np.float32)}, "source_fps": 50.0, "num_source_frames": 150,
           "frame_index": resample_indices(150, 50, 10)}
    sample, record = pack_sample(Episode("e", {"main": "x"}, "arm"), enc, EncodeConfig(fps=10), "vae")
    import io
    import json

    assert record["control_hz"] == 50.0 and record["fps"] == 10
    assert np.load(io.BytesIO(sample["actions.npy"])).shape == (150, 3)  # every row, not one per frame
    np.testing.assert_array_equal(np.load(io.BytesIO(sample["frame_index.npy"])), np.arange(0, 150, 5))
    assert json.loads(sample["meta.json"])["num_rows"] == 150


def test_the_mix_takes_its_widest_robot_and_a_narrower_width_is_refused():
    stats = {"pusht": {"dim": 2}, "franka": {"dim": 8}, "aloha": {"dim": 14}}
    assert action_width(DataConfig(), stats) == 14
    assert action_width(DataConfig(action_dim=16), stats) == 16
    with pytest.raises(ValueError, match=r"action_dim=8 is narrower than robot 'aloha' \(14-d"):
        action_width(DataConfig(action_dim=8), stats)


def test_the_robot_yaml_must_agree_with_the_rate_of_its_data():
    from pipeline.finetune import check_control_rate
    from pipeline.robots import load_robot

    franka = load_robot("franka")  # control_hz: 15
    assert check_control_rate(franka, {("a", 15.0), ("b", 15.0)}) == "control_rows"
    assert check_control_rate(franka, {("old", None)}) == "latent_spread"
    with pytest.raises(ValueError, match=r"control_hz 15 \(its YAML\), but --data a holds its episodes at 10 Hz"):
        check_control_rate(franka, {("a", 10.0)})
    with pytest.raises(ValueError, match="re-encode"):
        check_control_rate(franka, {("old", None), ("new", 15.0)})
