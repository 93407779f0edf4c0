"""Decoding LeRobot v3.0 episodes from a shared mp4: seek to each episode vs decode from the start.

    python benchmarks/bench_lerobot_decode.py [--episodes 60] [--frames 100] [--size 96]
                                              [--codec libsvtav1] [--gop 2] [--repeats 3]

Generates a LeRobot v3.0 dataset (meta/info.json, episode and data parquet files, ONE mp4 for all
episodes, written like LeRobot writes them: AV1 through libsvtav1, a keyframe every 2 frames by
default), reads it with the encode job's reader (preprocessing.sources.read_lerobot) and decodes
every episode's time segment at the encode default (10 fps, 96 px):

- "seek": ``uva_io.video.read_clip`` as the encode job runs it (decoder chosen per codec, each
  episode reached by seeking to the keyframe before it);
- "scan": PyAV decoding from the start of the file and dropping the frames before the episode
  (what the encode job did before), O(episodes^2) decoded frames per file;
- "own demos": the same frames as one mp4 per episode (the project's own demo layout), for scale.

The variants alternate ``--repeats`` times; medians of frames/s (frames kept per wall second).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def frames_of(episode: int, n: int, size: int) -> np.ndarray:
    """A moving pattern that differs per episode (so a wrong segment would show)."""
    yy, xx = np.mgrid[0:size, 0:size]
    return np.stack([np.stack([(xx * 3 + t * 7 + episode * 13) % 256, (yy * 3 + episode * 5) % 256,
                               np.full_like(xx, (t * 11 + episode) % 256)], -1) for t in range(n)]).astype(np.uint8)


def make_dataset(root: Path, episodes: int, frames: int, size: int, codec: str, gop: int, fps: int = 10) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from uva_io.video import write_mp4

    key = "observation.images.main"
    for sub in ("meta/episodes/chunk-000", "data/chunk-000", f"videos/{key}/chunk-000"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    all_frames = np.concatenate([frames_of(e, frames, size) for e in range(episodes)])
    write_mp4(root / f"videos/{key}/chunk-000/file-000.mp4", all_frames, fps, codec=codec, gop=gop)
    info = {"codebase_version": "v3.0", "robot_type": "bench", "fps": fps, "total_episodes": episodes,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": {key: {"dtype": "video", "shape": [3, size, size]},
                         "action": {"dtype": "float32", "shape": [2]}}}
    (root / "meta/info.json").write_text(json.dumps(info))
    n = episodes * frames
    pq.write_table(pa.table({"index": np.arange(n), "episode_index": np.repeat(np.arange(episodes), frames),
                             "frame_index": np.tile(np.arange(frames), episodes),
                             "action": list(np.zeros((n, 2), np.float32))}),
                   root / "data/chunk-000/file-000.parquet")
    starts = np.arange(episodes + 1) * frames
    pq.write_table(pa.table({
        "episode_index": np.arange(episodes), "length": [frames] * episodes,
        "data/chunk_index": [0] * episodes, "data/file_index": [0] * episodes,
        "dataset_from_index": starts[:-1], "dataset_to_index": starts[1:],
        f"videos/{key}/chunk_index": [0] * episodes, f"videos/{key}/file_index": [0] * episodes,
        f"videos/{key}/from_timestamp": (starts[:-1] / fps).tolist(),
        f"videos/{key}/to_timestamp": (starts[1:] / fps).tolist()}),
        root / "meta/episodes/chunk-000/file-000.parquet")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=60)
    p.add_argument("--frames", type=int, default=100, help="frames per episode")
    p.add_argument("--size", type=int, default=96, help="stored frame size (square)")
    p.add_argument("--codec", default="libsvtav1")
    p.add_argument("--gop", type=int, default=2, help="frames between keyframes (LeRobot writes 2)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    from preprocessing.sources import read_lerobot
    from uva_io.video import _pyav_clip, probe_codec, read_clip, write_mp4

    work = Path(tempfile.mkdtemp(prefix="bench_lerobot_"))
    make_dataset(work / "ds", args.episodes, args.frames, args.size, args.codec, args.gop)
    own = work / "own"
    own.mkdir()
    for e in range(args.episodes):  # the project's demo layout: one h264 file per episode
        write_mp4(own / f"ep{e:05d}.mp4", frames_of(e, args.frames, args.size), 10)
    episodes, errors = read_lerobot(work / "ds")
    assert not errors and len(episodes) == args.episodes
    (cam, video), = episodes[0].videos.items()
    print(f"{args.episodes} episodes x {args.frames} frames in one {probe_codec(video)} file "
          f"({Path(video).stat().st_size / 1e6:.1f} MB, {args.size} px, keyframe every {args.gop}); decode at 10 fps, 96 px")

    from uva_io.video import resize_center_crop

    for e in (1, len(episodes) // 2, len(episodes) - 1):  # each segment starts at its own episode
        got = read_clip(video, 10.0, 96, *episodes[e].segments[cam]).frames[0].astype(int)
        dist = [np.abs(got - resize_center_crop(frames_of(k, 1, args.size), 96)[0]).mean() for k in (e - 1, e)]
        assert dist[1] < dist[0], f"episode {e}: decoded segment does not start at the episode's first frame"

    def seek() -> int:
        return sum(len(read_clip(video, 10.0, 96, *ep.segments[cam]).frames) for ep in episodes)

    def scan() -> int:
        return sum(len(_pyav_clip(video, 10.0, 96, *ep.segments[cam], seek=False).frames) for ep in episodes)

    def own_demos() -> int:
        return sum(len(read_clip(str(f), 10.0, 96).frames) for f in sorted(own.glob("*.mp4")))

    rates: dict[str, list[float]] = {"seek": [], "scan": [], "own demos": []}
    for _ in range(args.repeats):
        for name, fn in (("seek", seek), ("scan", scan), ("own demos", own_demos)):
            t = time.perf_counter()
            n = fn()
            rates[name].append(n / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{'variant':10} {'frames/s (median)':>18}  runs")
    for k, v in rates.items():
        print(f"{k:10} {med[k]:18.1f}  {', '.join(f'{x:.0f}' for x in v)}")
    print(f"seek / scan: {med['seek'] / med['scan']:.1f}x")


if __name__ == "__main__":
    main()
