"""Make tests/fixtures/rlds/: a small RLDS dataset written by TensorFlow Datasets' own builder, and the
ground truth (expected.json) that our TensorFlow-free RLDS reader is tested against. Run once; CI only
reads the files and needs no TensorFlow.

    /work/tfenv/bin/python scripts/make_rlds_fixture.py --out tests/fixtures/rlds

Made with (a venv of its own, never the project's .venv), Python 3.11.7:

    python3.11 -m venv /work/tfenv
    /work/tfenv/bin/pip install tensorflow-cpu==2.18.1 tensorflow-datasets==4.9.7 tensorflow-metadata==1.16.1

which gave tensorflow-cpu 2.18.1, tensorflow-datasets 4.9.7, tensorflow-metadata 1.16.1 (1.21.0, the
newest, was built against protobuf 6 and fails to import with the protobuf 5.29.6 that TF 2.18 pins),
protobuf 5.29.6, numpy 2.0.2, dm-tree 0.1.10.

What it writes under --out:

* ``uva_rlds_fixture/1.0.0/``: the dataset version folder exactly as ``builder.download_and_prepare()``
  wrote it (dataset_info.json, features.json, the tfrecord shards). The builder ``uva_rlds_fixture``
  follows the RLDS / Open X-Embodiment layout: each example is one episode with ``steps`` (a
  ``tfds.features.Dataset``: observation/image 64x80x3 JPEG, observation/wrist_image 48x48x3 PNG,
  observation/state (7,) float32, action (7,) float32, reward, discount, is_first, is_last,
  is_terminal, language_instruction) and ``episode_metadata`` (file_path, episode_id). Splits:
  ``train`` (3 episodes of 5, 9 and 12 steps, written as 2 shards) and ``val`` (1 episode of 7 steps).
* ``expected.json``: per split, the episodes in the order TFDS reads them back
  (``tfds.builder_from_directory(...).as_dataset(split, shuffle_files=False)``), each with its
  shard file and index in it, step count, instruction, metadata, the full action / state / reward /
  discount arrays, the is_first / is_last / is_terminal flags, the bright square drawn in each camera
  per step, and the mean pixel value of each decoded image per step (JPEG is lossy: compare the JPEG
  means approximately, the PNG means exactly).

Content is deterministic (a seeded numpy RNG): episode e (0..2 train, 3 val) has
action[t, j] = e*100 + t + j/10, state[t, j] = -(e*100 + t) - j/10, reward 1 at the last step else 0,
discount 1, instruction "task {e}: ...". Each image is a dim smooth ramp (3 levels brighter at each
step) plus a little noise (0..3), with a bright square whose position moves with the step index.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

NAME = "uva_rlds_fixture"
VERSION = "1.0.0"
TRAIN_LENGTHS = (5, 9, 12)
VAL_LENGTHS = (7,)
INSTRUCTIONS = (
    "task 0: push the red block to the left",
    "task 1: pick up the blue cup",
    "task 2: open the top drawer",
    "task 3: stack the green block on the yellow block",
)
IMAGE_SHAPE = (64, 80, 3)
WRIST_SHAPE = (48, 48, 3)
SQUARE = {"image": 12, "wrist_image": 8}
SQUARE_VALUE = {"image": (250, 230, 40), "wrist_image": (40, 200, 250)}


def square_origin(camera: str, episode: int, t: int) -> tuple[int, int]:
    """Top-left (row, col) of the bright square of ``camera`` at step t of an episode."""
    h, w, _ = IMAGE_SHAPE if camera == "image" else WRIST_SHAPE
    s = SQUARE[camera]
    return ((3 * t + 5 * episode) % (h - s), (4 * t + 2 * episode) % (w - s))


def make_episode(episode: int, length: int) -> dict:
    rng = np.random.default_rng(1000 + episode)
    j = np.arange(7, dtype=np.float64) / 10.0
    t = np.arange(length, dtype=np.float64)[:, None]
    action = (episode * 100 + t + j).astype(np.float32)
    state = (-(episode * 100 + t) - j).astype(np.float32)
    steps = []
    for i in range(length):
        obs = {}
        for camera, shape in (("image", IMAGE_SHAPE), ("wrist_image", WRIST_SHAPE)):
            h, w, _ = shape
            # A smooth background (compresses well, keeps the fixture small) with a little noise, 3 levels
            # brighter at each step so that the per-step mean pixel values differ.
            ramp = (np.arange(h)[:, None, None] * 24 // h + np.arange(w)[None, :, None] * 24 // w
                    + np.array([0, 8, 16])[None, None, :] + 4 * episode + 3 * i)
            img = (ramp + rng.integers(0, 4, size=shape)).astype(np.uint8)
            r, c = square_origin(camera, episode, i)
            s = SQUARE[camera]
            img[r:r + s, c:c + s] = np.array(SQUARE_VALUE[camera], dtype=np.uint8)
            obs[camera] = img
        obs["state"] = state[i]
        last = i == length - 1
        steps.append({
            "observation": obs,
            "action": action[i],
            "reward": np.float32(1.0 if last else 0.0),
            "discount": np.float32(1.0),
            "is_first": i == 0,
            "is_last": last,
            "is_terminal": last,
            "language_instruction": INSTRUCTIONS[episode],
        })
    return {
        "steps": steps,
        "episode_metadata": {"file_path": f"synthetic/episode_{episode:03d}.npz", "episode_id": np.int32(episode)},
    }


class UvaRldsFixture(tfds.core.GeneratorBasedBuilder):
    """A tiny synthetic RLDS dataset (Open X-Embodiment layout) for the UVA RLDS reader's tests."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {"1.0.0": "Synthetic test fixture."}

    def _info(self) -> tfds.core.DatasetInfo:
        # tfds.core.DatasetInfo directly: dataset_info_from_configs reads metadata files from the builder's
        # package folder, which a builder defined in a script has not.
        return tfds.core.DatasetInfo(
            builder=self,
            description="Synthetic RLDS episodes for tests (deterministic content).",
            features=tfds.features.FeaturesDict({
                "steps": tfds.features.Dataset({
                    "observation": tfds.features.FeaturesDict({
                        "image": tfds.features.Image(shape=IMAGE_SHAPE, dtype=np.uint8, encoding_format="jpeg",
                                                     doc="Main camera RGB."),
                        "wrist_image": tfds.features.Image(shape=WRIST_SHAPE, dtype=np.uint8,
                                                           encoding_format="png", doc="Wrist camera RGB."),
                        "state": tfds.features.Tensor(shape=(7,), dtype=np.float32, doc="Robot state."),
                    }),
                    "action": tfds.features.Tensor(shape=(7,), dtype=np.float32, doc="Robot action."),
                    "reward": tfds.features.Scalar(dtype=np.float32, doc="Reward."),
                    "discount": tfds.features.Scalar(dtype=np.float32, doc="Discount."),
                    "is_first": tfds.features.Scalar(dtype=np.bool_, doc="True on the first step."),
                    "is_last": tfds.features.Scalar(dtype=np.bool_, doc="True on the last step."),
                    "is_terminal": tfds.features.Scalar(dtype=np.bool_, doc="True on a terminal step."),
                    "language_instruction": tfds.features.Text(doc="Language instruction."),
                }),
                "episode_metadata": tfds.features.FeaturesDict({
                    "file_path": tfds.features.Text(doc="Path of the source file."),
                    "episode_id": tfds.features.Scalar(dtype=np.int32, doc="Episode index."),
                }),
            }),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(0, TRAIN_LENGTHS),
            "val": self._generate_examples(len(TRAIN_LENGTHS), VAL_LENGTHS),
        }

    def _generate_examples(self, first: int, lengths):
        for k, length in enumerate(lengths):
            e = first + k
            yield f"episode_{e:03d}", make_episode(e, length)


def build(data_dir: Path) -> Path:
    builder = UvaRldsFixture(data_dir=str(data_dir))
    # Small shards so that train (3 episodes) is written as 2 files and val (1 episode) as 1. In TFDS
    # 4.9.7 ShardConfig.calculate_number_shards is a classmethod that reads the class defaults, not the
    # DownloadConfig's min_shard_size, so the class default is lowered too while building.
    from tensorflow_datasets.core.utils import shard_utils

    old = shard_utils.ShardConfig.min_shard_size
    shard_utils.ShardConfig.min_shard_size = 1
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(min_shard_size=1))
    finally:
        shard_utils.ShardConfig.min_shard_size = old
    return Path(builder.data_dir)


def raw_episode_ids(path: Path) -> list[int]:
    """episode_id of each serialized record of one shard, in file order."""
    ids = []
    for raw in tf.data.TFRecordDataset(str(path)):
        ex = tf.train.Example.FromString(raw.numpy())
        ids.append(int(ex.features.feature["episode_metadata/episode_id"].int64_list.value[0]))
    return ids


def expected(version_dir: Path) -> dict:
    info = json.loads((version_dir / "dataset_info.json").read_text())
    builder = tfds.builder_from_directory(str(version_dir))
    out = {"name": NAME, "version": VERSION, "splits": {}}
    for split in ("train", "val"):
        shards = sorted(p for p in version_dir.iterdir() if p.name.startswith(f"{NAME}-{split}.tfrecord-"))
        where = {}
        for shard in shards:
            for index, eid in enumerate(raw_episode_ids(shard)):
                where[eid] = (shard.name, index)
        episodes = []
        for ep in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
            steps = list(ep["steps"])
            eid = int(ep["episode_metadata"]["episode_id"])
            rec = {
                "file": where[eid][0],
                "index_in_file": where[eid][1],
                "num_steps": len(steps),
                "language_instruction": steps[0]["language_instruction"].decode(),
                "language_instructions_all_equal": len({s["language_instruction"] for s in steps}) == 1,
                "episode_metadata": {
                    "file_path": ep["episode_metadata"]["file_path"].decode(),
                    "episode_id": eid,
                },
                "action": [s["action"].tolist() for s in steps],
                "state": [s["observation"]["state"].tolist() for s in steps],
                "reward": [float(s["reward"]) for s in steps],
                "discount": [float(s["discount"]) for s in steps],
                "is_first": [bool(s["is_first"]) for s in steps],
                "is_last": [bool(s["is_last"]) for s in steps],
                "is_terminal": [bool(s["is_terminal"]) for s in steps],
                "images": {},
            }
            for camera in ("image", "wrist_image"):
                imgs = [s["observation"][camera] for s in steps]
                rec["images"][camera] = {
                    "shape": list(imgs[0].shape),
                    "encoding": "jpeg" if camera == "image" else "png",
                    "mean_pixel": [float(im.astype(np.float64).mean()) for im in imgs],
                    "square_size": SQUARE[camera],
                    "square_value": list(SQUARE_VALUE[camera]),
                    "square_origin": [list(square_origin(camera, eid, t)) for t in range(len(steps))],
                }
            episodes.append(rec)
        split_info = next(s for s in info["splits"] if s["name"] == split)
        out["splits"][split] = {
            "shard_files": [p.name for p in shards],
            "shard_lengths": [int(n) for n in split_info["shardLengths"]],
            "episodes": episodes,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    with tempfile.TemporaryDirectory() as tmp:
        version_dir = build(Path(tmp))
        dest = out / NAME / VERSION
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(version_dir, dest)
    exp = expected(dest)
    text = json.dumps(exp, indent=1)
    # One line per innermost list of numbers / booleans, so the file stays readable.
    text = re.sub(r"\[[^\[\]{}\"]*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(0)[1:-1].split(",")) + "]",
                  text)
    (out / "expected.json").write_text(text + "\n")
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:8d}  {p}")


if __name__ == "__main__":
    main()
