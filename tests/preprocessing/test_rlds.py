"""RLDS without TensorFlow, against a dataset written by TFDS's own builder
(tests/fixtures/rlds, scripts/make_rlds_fixture.py: TFDS 4.9.7) and its read-back ground truth."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from preprocessing.encode import EncodeConfig, decode_episode
from preprocessing.rlds import Feature, read_rlds, record_arrays, resolve_layout
from preprocessing.sources import load_array
from tests.preprocessing.test_encode_latents import vae_path  # noqa: F401  (a tiny VAE, module fixture)
from uva_io.tfrecord import RecordError, parse_example, read_at, scan, serialize_example, write_record

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "rlds"
ROOT = FIX / "uva_rlds_fixture" / "1.0.0"
EXPECTED = json.loads((FIX / "expected.json").read_text())["splits"]


def _ref_parts(ref: str) -> tuple[str, int, list[str]]:
    body = ref[len("rlds:"):]
    where, _, keys = body.partition("::")
    file, _, offset = where.rpartition("#")
    return file, int(offset), keys.split("+")


def test_every_episode_step_action_and_frame_comes_through():
    episodes, errors = read_rlds(str(ROOT), source_fps=15)
    assert not errors
    want = [e for split in ("train", "val") for e in EXPECTED[split]["episodes"]]
    assert len(episodes) == len(want) == 4
    for ep, exp in zip(episodes, want):  # TFDS's own read order
        assert Path(ep.source.rpartition("#")[0]).name == exp["file"]
        assert ep.instruction == exp["language_instruction"] and ep.fps == 15
        assert ep.metadata["episode_id"] == exp["episode_metadata"]["episode_id"]
        assert ep.metadata["file_path"] == exp["episode_metadata"]["file_path"]
        np.testing.assert_array_equal(load_array(ep.actions), np.asarray(exp["action"], np.float32))
        np.testing.assert_array_equal(load_array(ep.proprio), np.asarray(exp["state"], np.float32))
        # PNG decodes exactly; JPEG decoders differ by about a level (TensorFlow's vs Pillow's
        # libjpeg settings), while consecutive steps differ by about 2.8 levels
        for cam, tol in (("image", 2.0), ("wrist_image", 0.0)):
            file, offset, keys = _ref_parts(ep.videos[cam])
            frames = record_arrays(file, offset, keys)[keys[0]]
            got = frames[:]
            img = exp["images"][cam]
            assert got.shape == (exp["num_steps"], *img["shape"])  # 64x80 and 48x48
            means = got.reshape(len(got), -1).mean(1)
            assert np.abs(means - np.asarray(img["mean_pixel"])).max() <= tol + 1e-9
            half = img["square_size"] // 2
            for t, (y, x) in enumerate(img["square_origin"]):  # the moving square where it was drawn
                assert np.abs(got[t, y + half, x + half].astype(int) - img["square_value"]).max() <= 30


def test_splits_rates_and_layouts_are_chosen_or_refused_by_name():
    val, _ = read_rlds(str(ROOT), source_fps=10, splits=["val"])
    assert [e.metadata["split"] for e in val] == ["val"]
    with pytest.raises(ValueError, match=r"no split \['test'\] \(splits: \['train', 'val'\]\)"):
        read_rlds(str(ROOT), source_fps=10, splits=["test"])
    with pytest.raises(ValueError, match="RLDS stores no frame rate.*--source-fps"):
        read_rlds(str(ROOT))
    cams, _ = read_rlds(str(ROOT), source_fps=10, cameras={"front": "image"})
    assert list(cams[0].videos) == ["front"]
    feats = {"steps/observation/rgb": Feature("image", (8, 8, 3), "uint8", "jpeg"),
             "steps/action/world_vector": Feature("tensor", (3,), "float32"),
             "steps/action/rotation_delta": Feature("tensor", (3,), "float32"),
             "steps/action/gripper_closedness_action": Feature("tensor", (1,), "float32")}
    with pytest.raises(ValueError, match=r"action is not one tensor.*steps/action/world_vector.*found:"):
        resolve_layout("my_dataset", feats, source_fps=5)
    # an OXE dataset the table knows: its action parts, its control rate, its camera names
    fractal = {**feats, "steps/observation/image": feats.pop("steps/observation/rgb")}
    layout = resolve_layout("fractal20220817_data", fractal)
    assert layout.fps == 3 and layout.cameras == {"primary": "steps/observation/image"}
    assert layout.action == ["steps/action/world_vector", "steps/action/rotation_delta",
                             "steps/action/gripper_closedness_action"]
    with pytest.raises(ValueError, match=r"no image feature.*found: steps/action"):
        resolve_layout("x", {"steps/action": Feature("tensor", (2,), "float32")}, source_fps=5)


def _copy(tmp_path: Path) -> Path:
    dst = tmp_path / "uva_rlds_fixture" / "1.0.0"
    shutil.copytree(ROOT, dst)
    return dst


def test_a_crc_mismatch_or_a_torn_file_skips_only_what_is_bad(tmp_path):
    root = _copy(tmp_path)
    first = root / "uva_rlds_fixture-train.tfrecord-00000-of-00002"
    with open(first, "rb") as f:
        (o0, n0), (o1, n1) = scan(f, str(first))
    data = bytearray(first.read_bytes())
    data[o1 + 12 + n1 // 2] ^= 0xFF  # one flipped byte inside the second episode's data
    first.write_bytes(bytes(data))
    torn = root / "uva_rlds_fixture-val.tfrecord-00000-of-00001"
    torn.write_bytes(torn.read_bytes()[:-100])
    episodes, errors = read_rlds(str(root), source_fps=10)
    assert len(episodes) == 2  # train: the first record of shard 0 and shard 1's record
    reasons = " | ".join(e["reason"] for e in errors)
    assert "data CRC mismatch in the record at byte" in reasons and "torn record at byte 0" in reasons
    with open(first, "rb") as f, pytest.raises(RecordError, match="CRC mismatch"):
        read_at(f, o1, str(first))


def test_an_undecodable_frame_skips_its_episode_with_the_step(tmp_path):
    root = _copy(tmp_path)
    shard = root / "uva_rlds_fixture-val.tfrecord-00000-of-00001"
    with open(shard, "rb") as f:
        (offset, _), = scan(f, str(shard))
        ex = parse_example(read_at(f, offset, str(shard)))
    ex["steps/observation/image"][3] = b"\xff\xd8\xff not a jpeg"
    with open(shard, "wb") as f:
        write_record(f, serialize_example(ex))
    episodes, errors = read_rlds(str(root), source_fps=10, splits=["val"])
    assert not errors and len(episodes) == 1
    res = decode_episode(episodes[0], EncodeConfig(fps=None, resolution=32))
    assert "step 3: undecodable frame" in res["error"]


def test_uva_encode_rlds_end_to_end_keeps_every_step_and_the_metadata(vae_path, tmp_path):
    from tests.preprocessing.test_encode_latents import encode
    from uva_io.shardset import iter_tar_samples, load_index

    out = tmp_path / "out"
    encode(["--rlds", str(ROOT), "--source-fps", "5", "--output", str(out)], vae_path, None)  # a private Ray
    index = load_index(out)
    assert index["num_episodes"] == 4 and index["num_skipped"] == 0
    want = {e["episode_metadata"]["episode_id"]: e for s in ("train", "val") for e in EXPECTED[s]["episodes"]}
    seen = 0
    for shard in sorted(out.glob("*.tar")):
        for sample in iter_tar_samples(shard):
            meta = sample["meta.json"]
            exp = want[meta["episode_metadata"]["episode_id"]]
            assert meta["num_frames"] == exp["num_steps"] and meta["source_fps"] == 5
            assert meta["instruction"] == exp["language_instruction"] and sorted(meta["cameras"]) == ["image",
                                                                                                     "wrist_image"]
            np.testing.assert_array_equal(sample["actions.npy"], np.asarray(exp["action"], np.float32))
            assert "lang.npy" in sample
            seen += 1
    assert seen == 4


def test_an_oxe_layout_with_a_dict_action_and_the_instruction_in_the_observation(tmp_path):
    """OXE's bridge copy: the action is parts (world_vector, rotation_delta, open_gripper: a bool
    stored as int64) and the instruction is observation/natural_language_instruction."""
    import io as _io

    from PIL import Image

    root = tmp_path / "bridge" / "0.1.0"
    root.mkdir(parents=True)
    img = _io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(img, format="PNG")
    t = 3
    ex = {"steps/observation/image": [img.getvalue()] * t,
          "steps/observation/natural_language_instruction": [b"put the spoon in the pot"] * t,
          "steps/observation/state": np.arange(t * 7, dtype=np.float32),
          "steps/action/world_vector": np.arange(t * 3, dtype=np.float32),
          "steps/action/rotation_delta": -np.arange(t * 3, dtype=np.float32),
          "steps/action/open_gripper": np.array([1, 0, 1]), "steps/is_first": np.array([1, 0, 0])}
    with open(root / "bridge-train.tfrecord-00000-of-00001", "wb") as f:
        write_record(f, serialize_example(ex))
    tensor = lambda dims, dtype="float32": {"tensor": {"shape": {"dimensions": dims}, "dtype": dtype}}  # noqa: E731
    step = {"featuresDict": {"features": {
        "observation": {"featuresDict": {"features": {
            "image": {"image": {"shape": {"dimensions": ["8", "8", "3"]}, "dtype": "uint8", "encodingFormat": "png"}},
            "state": tensor(["7"]), "natural_language_instruction": {"text": {}}}}},
        "action": {"featuresDict": {"features": {"world_vector": tensor(["3"]), "rotation_delta": tensor(["3"]),
                                                 "open_gripper": tensor([], "bool")}}},
        "is_first": tensor([], "bool")}}}
    (root / "features.json").write_text(json.dumps({"featuresDict": {"features": {"steps": {"sequence": {
        "feature": step}}}}}))
    (root / "dataset_info.json").write_text(json.dumps({"name": "bridge", "splits": [{"name": "train",
                                                                                       "shardLengths": ["1"]}]}))
    (ep,), errors = read_rlds(str(root))  # the table knows bridge's rate (5 Hz), cameras and action parts
    assert not errors and ep.fps == 5 and ep.instruction == "put the spoon in the pot"
    assert list(ep.videos) == ["primary"]
    actions = load_array(ep.actions)
    np.testing.assert_array_equal(actions[:, 6], [1, 0, 1])  # the gripper part, a bool as 0 / 1
    np.testing.assert_array_equal(actions[1, :6], [3, 4, 5, -3, -4, -5])
    assert load_array(ep.proprio).shape == (3, 7)  # observation/state (EEF_state is derived by loaders)
