"""Generate a tiny LeRobot v2.1-format dataset with LeRobot's own writer code.

What it writes (under ``--out``, the dataset root):

* ``meta/info.json`` (``"codebase_version": "v2.1"``), ``meta/episodes.jsonl``,
  ``meta/tasks.jsonl``, ``meta/episodes_stats.jsonl``
* ``data/chunk-000/episode_00000{0,1,2}.parquet``
* ``videos/chunk-000/observation.images.{front,wrist}/episode_00000{0,1,2}.mp4``
  (encoded by LeRobot's ``encode_video_frames`` with its defaults: libsvtav1 / AV1,
  yuv420p, g=2, crf=30)
* ``expected.json``: ground truth for tests (per episode: length, task, task_index,
  action/state arrays, timestamps, and per camera the frame count and per-frame mean
  pixel value of both the source frames and the frames decoded back with PyAV).

Dataset contents: fps 50; features ``observation.images.front`` (video, H=64 W=80 C=3),
``observation.images.wrist`` (video, H=48 W=48 C=3), ``observation.state`` (float32, (6,)),
``action`` (float32, (6,)); 3 episodes of 20, 31 and 26 frames with tasks
"pick up the red cube", "push the block to the goal", "pick up the red cube".

* ``action[t, j] = episode*100 + t + j/10`` (stored as float32)
* ``observation.state[t, j] = -(episode*100 + t + j/10)`` (stored as float32)
* each image: a flat background whose colour is drawn per episode/camera from
  ``numpy.random.default_rng(SEED)`` plus a brightness ramp of +2 per frame index, and a
  white (255) square that moves diagonally with the frame index, so the per-frame mean
  rises with ``t`` and decoded frames can be checked approximately.

It uses only LeRobot's public writer API: ``LeRobotDataset.create(...)``,
``add_frame(frame, task=...)`` and ``save_episode()`` (v2.1 needs no finalize step;
videos are encoded per episode inside ``save_episode``). Nothing is uploaded.

Written with lerobot==0.3.3 (``lerobot.datasets.lerobot_dataset.CODEBASE_VERSION ==
"v2.1"``), datasets==3.6.0, pyarrow==21.0.0, av==15.1.0, torch==2.13.0+cpu, in a
separate venv (/work/lrenv); the project itself and CI never need LeRobot, only the
generated files are committed. Run from the repository root:

    /work/lrenv/bin/python scripts/make_lerobot_v21_fixture.py --out tests/fixtures/lerobot_v21

``--force`` deletes an existing ``--out`` first (LeRobot refuses an existing root).
AV1 encoding is not guaranteed bit-identical across encoder builds, so regenerated
videos may differ slightly; ``expected.json`` is always rewritten from the new files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import av  # noqa: E402
import numpy as np  # noqa: E402

import lerobot  # noqa: E402
from lerobot.datasets.lerobot_dataset import CODEBASE_VERSION, LeRobotDataset  # noqa: E402

SEED = 20240521
FPS = 50
REPO_ID = "uva_tests/lerobot_v21_fixture"
EPISODES = [
    (20, "pick up the red cube"),
    (31, "push the block to the goal"),
    (26, "pick up the red cube"),
]
# camera key -> (height, width, square size)
CAMERAS = {
    "observation.images.front": (64, 80, 12),
    "observation.images.wrist": (48, 48, 8),
}
DIM = 6


def action_value(ep: int, t: int) -> np.ndarray:
    return np.array([ep * 100 + t + j / 10 for j in range(DIM)], dtype=np.float32)


def state_value(ep: int, t: int) -> np.ndarray:
    return -action_value(ep, t)


def make_frame(base: np.ndarray, t: int, h: int, w: int, sq: int) -> np.ndarray:
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = np.clip(base.astype(np.int64) + 2 * t, 0, 255).astype(np.uint8)
    y = (t * 2) % (h - sq)
    x = (t * 3) % (w - sq)
    img[y : y + sq, x : x + sq] = 255
    return img


def features() -> dict:
    feats = {}
    for key, (h, w, _) in CAMERAS.items():
        feats[key] = {"dtype": "video", "shape": (h, w, 3), "names": ["height", "width", "channels"]}
    feats["observation.state"] = {
        "dtype": "float32",
        "shape": (DIM,),
        "names": [f"joint_{j}" for j in range(DIM)],
    }
    feats["action"] = {"dtype": "float32", "shape": (DIM,), "names": [f"joint_{j}" for j in range(DIM)]}
    return feats


def decode_means(path: Path) -> tuple[list[float], list[float], dict]:
    means, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {
            "codec": stream.codec_context.codec.canonical_name,
            "decoder": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
        }
        for frame in container.decode(stream):
            arr = frame.to_ndarray(format="rgb24")
            means.append(round(float(arr.mean()), 4))
            times.append(round(float(frame.time), 6))
    return means, times, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="dataset root folder to create")
    ap.add_argument("--force", action="store_true", help="delete --out first if it exists")
    args = ap.parse_args()
    out: Path = args.out
    if out.exists():
        if not args.force:
            raise SystemExit(f"{out} exists; pass --force to replace it")
        shutil.rmtree(out)
    assert CODEBASE_VERSION == "v2.1", CODEBASE_VERSION

    rng = np.random.default_rng(SEED)
    bases = {
        (ep, key): rng.integers(10, 120, size=3).astype(np.uint8)
        for ep in range(len(EPISODES))
        for key in CAMERAS
    }

    ds = LeRobotDataset.create(
        repo_id=REPO_ID,
        fps=FPS,
        features=features(),
        root=out,
        robot_type="synthetic",
        use_videos=True,
        image_writer_processes=0,
        image_writer_threads=0,
    )
    source_means: dict[tuple[int, str], list[float]] = {}
    for ep, (length, task) in enumerate(EPISODES):
        for t in range(length):
            frame = {}
            for key, (h, w, sq) in CAMERAS.items():
                img = make_frame(bases[(ep, key)], t, h, w, sq)
                source_means.setdefault((ep, key), []).append(round(float(img.mean()), 4))
                frame[key] = img
            frame["observation.state"] = state_value(ep, t)
            frame["action"] = action_value(ep, t)
            ds.add_frame(frame, task=task)
        ds.save_episode()

    # LeRobot removes each episode's temporary PNG folder; drop the empty parents it leaves.
    images_dir = out / "images"
    if images_dir.is_dir() and not any(p.is_file() for p in images_dir.rglob("*")):
        shutil.rmtree(images_dir)

    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v2.1", info["codebase_version"]
    tasks = [json.loads(line) for line in (out / "meta" / "tasks.jsonl").read_text().splitlines()]
    task_index = {row["task"]: row["task_index"] for row in tasks}

    expected = {
        "lerobot_version": lerobot.__version__,
        "codebase_version": info["codebase_version"],
        "fps": FPS,
        "seed": SEED,
        "total_frames": sum(length for length, _ in EPISODES),
        "tasks": {str(v): k for k, v in task_index.items()},
        "cameras": {k: {"height": h, "width": w} for k, (h, w, _) in CAMERAS.items()},
        "formulas": {
            "action": "action[t, j] = float32(episode*100 + t + j/10)",
            "observation.state": "state[t, j] = -float32(episode*100 + t + j/10)",
            "timestamp": "float32(t / fps)",
        },
        "episodes": [],
    }
    start = 0
    for ep, (length, task) in enumerate(EPISODES):
        ep_entry = {
            "episode_index": ep,
            "length": length,
            "task": task,
            "task_index": task_index[task],
            "index_from": start,
            "index_to": start + length,
            "timestamps": [float(np.float32(t / FPS)) for t in range(length)],
            "action": [[float(v) for v in action_value(ep, t)] for t in range(length)],
            "observation.state": [[float(v) for v in state_value(ep, t)] for t in range(length)],
            "videos": {},
        }
        for key in CAMERAS:
            rel = info["video_path"].format(episode_chunk=0, video_key=key, episode_index=ep)
            means, times, vinfo = decode_means(out / rel)
            ep_entry["videos"][key] = {
                "path": rel,
                "decoded_frame_count": len(means),
                "decoded_mean": means,
                "decoded_time": times,
                "source_mean": source_means[(ep, key)],
                "max_abs_mean_error": round(
                    max(abs(a - b) for a, b in zip(means, source_means[(ep, key)], strict=True)), 4
                ),
                **vinfo,
            }
        expected["episodes"].append(ep_entry)
        start += length

    (out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {out} (lerobot {lerobot.__version__}, codebase_version {info['codebase_version']})")


if __name__ == "__main__":
    main()
