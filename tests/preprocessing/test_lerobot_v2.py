"""LeRobot v2.1 beside v3.0, against a dataset written by LeRobot's own code
(tests/fixtures/lerobot_v21, scripts/make_lerobot_v21_fixture.py: lerobot 0.3.3): 50 Hz,
two cameras of different sizes (AV1, as LeRobot encodes), three episodes, two tasks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing.encode import EncodeConfig, decode_episode
from preprocessing.sources import load_array, read_lerobot
from tests.preprocessing.test_encode_latents import vae_path  # noqa: F401  (a tiny VAE, module fixture)

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "lerobot_v21"
EXPECTED = json.loads((ROOT / "expected.json").read_text())


def test_every_episode_task_and_action_row_comes_through():
    episodes, errors = read_lerobot(ROOT)
    assert not errors and len(episodes) == 3
    assert json.loads((ROOT / "meta" / "info.json").read_text())["codebase_version"] == "v2.1"
    for ep, exp in zip(episodes, EXPECTED["episodes"]):
        assert ep.instruction == exp["task"] and ep.fps == 50 and sorted(ep.videos) == ["front", "wrist"]
        np.testing.assert_array_equal(load_array(ep.actions), np.asarray(exp["action"], np.float32))
        np.testing.assert_array_equal(load_array(ep.proprio), np.asarray(exp["observation.state"], np.float32))
        res = decode_episode(ep, EncodeConfig(fps=None, resolution=32))
        assert "error" not in res, res.get("error")
        for cam in ("front", "wrist"):  # every frame of both cameras (64x80 and 48x48)
            count = exp["videos"][f"observation.images.{cam}"]["decoded_frame_count"]
            assert len(res["frames"][cam]) == count == exp["length"]
        assert res["source_fps"] == 50 and len(res["arrays"]["actions"]) == exp["length"]


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "ds"
    shutil.copytree(ROOT, dst)
    return dst


def test_bad_episodes_are_skipped_with_the_reason(tmp_path):
    root = _copy(tmp_path)
    # episode 1: its timestamps are not frame / fps
    p1 = root / "data" / "chunk-000" / "episode_000001.parquet"
    t = pq.read_table(p1)
    ts = np.asarray(t["timestamp"].to_pylist(), np.float32) * 2
    pq.write_table(t.set_column(t.schema.get_field_index("timestamp"), "timestamp", pa.array(ts)), p1)
    # episode 2: its parquet lost rows (meta/episodes.jsonl still says 26)
    p2 = root / "data" / "chunk-000" / "episode_000002.parquet"
    pq.write_table(pq.read_table(p2).slice(0, 20), p2)
    episodes, errors = read_lerobot(root)
    assert [e.episode_id for e in episodes] == ["ds_000000"]
    reasons = {e["input"].rsplit("=", 1)[1]: e["reason"] for e in errors}
    assert "is not frame / fps" in reasons["1"] and "has 20 rows, meta/episodes.jsonl says length 26" in reasons["2"]


def test_an_mp4_shorter_than_its_parquet_skips_the_episode(tmp_path):
    root = _copy(tmp_path)
    cam = root / "videos" / "chunk-000" / "observation.images.front"
    shutil.copyfile(cam / "episode_000000.mp4", cam / "episode_000001.mp4")  # 20 frames for 31 rows
    ep = read_lerobot(root)[0][1]
    res = decode_episode(ep, EncodeConfig(fps=None, resolution=32))
    assert "error" in res and ("31" in res["error"] and "20" in res["error"])


def test_uva_encode_lerobot_v21_end_to_end(vae_path, tmp_path):  # noqa: F811
    from tests.preprocessing.test_encode_latents import encode
    from uva_io.shardset import iter_tar_samples, load_index

    out = tmp_path / "out"
    encode(["--lerobot", str(ROOT), "--output", str(out)], vae_path, None)
    index = load_index(out)
    assert index["num_episodes"] == 3 and index["num_skipped"] == 0
    frames = {s["meta.json"]["episode_id"]: s for shard in sorted(out.glob("*.tar")) for s in iter_tar_samples(shard)}
    for i, exp in enumerate(EXPECTED["episodes"]):
        sample = frames[f"lerobot_v21_{i:06d}"]
        assert sample["meta.json"]["num_frames"] == exp["length"] and sample["meta.json"]["source_fps"] == 50
        assert sample["latents.front.npy"].shape[0] == sample["latents.wrist.npy"].shape[0] == exp["length"]
        np.testing.assert_array_equal(sample["actions.npy"], np.asarray(exp["action"], np.float32))
