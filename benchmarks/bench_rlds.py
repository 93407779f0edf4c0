"""RLDS reading speed and memory: decode frames/s, the whole encode job's frames/s beside the
VAE-only rate, and the peak memory of a 1,000-step episode.

    python benchmarks/bench_rlds.py [--episodes 8] [--steps 150] [--long-steps 1000] [--size 96]

Writes an RLDS dataset in TFDS's layout (dataset_info.json, features.json, tfrecord shards of
``tf.train.Example`` episodes with JPEG frames of two cameras, uva_io.tfrecord's writer) into a
temporary folder, then measures on it, one after another on this machine:

- decode: every record read, its CRCs checked, parsed, every frame decoded (one process);
- VAE only: the encode config's VAE on the same frames, already decoded and resized (one actor's
  work, the job's ceiling on this CPU);
- the job: ``uva-encode --rlds`` end to end (a private local Ray), frames/s from its summary;
- memory: a separate process decodes and encodes one ``--long-steps`` episode through the
  encode worker's path (``decode_episode`` / ``encode_streaming``) and reports its peak RSS
  against the episode's encoded size and its decoded size.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CAMERAS = {"image": 0, "wrist_image": 1}


def jpeg(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_dataset(root: Path, episodes: int, steps: int, size: int, seed: int = 0, long_steps: int = 0) -> Path:
    """<root>/bench_rlds/1.0.0/ in TFDS's layout; with ``long_steps`` one more split, ``long``,
    holding one episode of that many steps."""
    from uva_io.tfrecord import serialize_example, write_record

    rng = np.random.default_rng(seed)
    folder = root / "bench_rlds" / "1.0.0"
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size]

    def episode(e: int, n: int) -> bytes:
        frames = {cam: [] for cam in CAMERAS}
        for t in range(n):
            for cam, c in CAMERAS.items():  # a smooth scene with a moving square
                img = np.stack([(xx + 3 * t + 40 * c) % 256, (yy + 2 * t) % 256, np.full_like(xx, 80 + 20 * e)],
                               -1).astype(np.uint8)
                y0, x0 = (5 * t) % (size - 16), (7 * t + 11 * c) % (size - 16)
                img[y0 : y0 + 16, x0 : x0 + 16] = 250
                frames[cam].append(jpeg(img))
        feats = {f"steps/observation/{cam}": f for cam, f in frames.items()}
        feats.update({"steps/action": rng.normal(size=(n, 7)).astype(np.float32),
                      "steps/observation/state": rng.normal(size=(n, 7)).astype(np.float32),
                      "steps/is_first": np.eye(1, n, 0, dtype=np.int64)[0],
                      "steps/is_last": np.eye(1, n, n - 1, dtype=np.int64)[0],
                      "steps/language_instruction": [f"task {e}".encode()] * n,
                      "episode_metadata/episode_id": np.array([e])})
        return serialize_example(feats)

    splits = {"train": [steps] * episodes}
    if long_steps:
        splits["long"] = [long_steps]
    info = {"name": "bench_rlds", "version": "1.0.0", "fileFormat": "tfrecord", "splits": []}
    for split, lengths in splits.items():
        shards = 2 if len(lengths) > 1 else 1
        per = -(-len(lengths) // shards)
        counts = []
        for s in range(shards):
            mine = lengths[s * per : (s + 1) * per]
            with open(folder / f"bench_rlds-{split}.tfrecord-{s:05d}-of-{shards:05d}", "wb") as f:
                for k, n in enumerate(mine):
                    write_record(f, episode(s * per + k, n))
            counts.append(str(len(mine)))
        info["splits"].append({"name": split, "shardLengths": counts,
                               "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"})
    image = lambda: {"pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",  # noqa: E731
                     "image": {"shape": {"dimensions": [str(size), str(size), "3"]}, "dtype": "uint8",
                               "encodingFormat": "jpeg"}}
    tensor = lambda: {"pythonClassName": "tensorflow_datasets.core.features.tensor_feature.Tensor",  # noqa: E731
                      "tensor": {"shape": {"dimensions": ["7"]}, "dtype": "float32", "encoding": "none"}}
    scalar = lambda dtype: {"pythonClassName": "tensorflow_datasets.core.features.scalar.Scalar",  # noqa: E731
                            "tensor": {"shape": {}, "dtype": dtype, "encoding": "none"}}
    step = {"featuresDict": {"features": {
        "observation": {"featuresDict": {"features": {"image": image(), "wrist_image": image(), "state": tensor()}}},
        "action": tensor(), "is_first": scalar("bool"), "is_last": scalar("bool"),
        "language_instruction": {"pythonClassName": "tensorflow_datasets.core.features.text_feature.Text",
                                 "text": {}}}}}
    features = {"featuresDict": {"features": {
        "steps": {"pythonClassName": "tensorflow_datasets.core.features.dataset_feature.Dataset",
                  "sequence": {"feature": step, "length": "-1"}},
        "episode_metadata": {"featuresDict": {"features": {"episode_id": scalar("int32")}}}}}}
    (folder / "dataset_info.json").write_text(json.dumps(info))
    (folder / "features.json").write_text(json.dumps(features))
    return folder


MEMORY_PROBE = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from preprocessing.rlds import read_rlds
from preprocessing.encode import EncodeConfig, FrameEncoder, decode_episode
from uva_io.config import load_config
cfg = load_config(EncodeConfig, sys.argv[3], ["fps=null"])
eps, _ = read_rlds(sys.argv[2], source_fps=10, splits=["long"])
encoder = FrameEncoder(cfg.vae, cfg.vae_preset, cfg.batch_size)
res = decode_episode(eps[0], cfg)
if res.get("stream"):
    res = encoder.encode_streaming(eps[0], cfg)
else:
    res = encoder.encode_episode(res)
assert "error" not in res, res
frames = int(next(iter(res["latents"].values())).shape[0])
print(json.dumps({"frames": frames, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--long-steps", type=int, default=1000)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--config", default=str(ROOT / "configs/preprocess/default.yaml"))
    args = p.parse_args()
    from preprocessing.encode import EncodeConfig, FrameEncoder
    from preprocessing.rlds import read_rlds, record_arrays
    from uva_io.config import load_config
    from uva_io.video import resize_center_crop

    cfg = load_config(EncodeConfig, args.config, ["fps=null"])
    work = Path(tempfile.mkdtemp(prefix="bench_rlds_"))
    t0 = time.perf_counter()
    folder = write_dataset(work, args.episodes, args.steps, args.size, long_steps=args.long_steps)
    size_mb = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
    print(f"dataset: {args.episodes} x {args.steps} steps + 1 x {args.long_steps}, 2 cameras of {args.size} px JPEG, "
          f"{size_mb:.1f} MB, written in {time.perf_counter() - t0:.1f} s")
    # decode: read + check + parse + JPEG decode of every frame of the train split
    t0 = time.perf_counter()
    episodes, errors = read_rlds(str(folder), source_fps=10, splits=["train"])
    decoded = []
    for ep in episodes:
        for ref in ep.videos.values():
            body = ref[len("rlds:"):]
            where, _, key = body.partition("::")
            file, _, offset = where.rpartition("#")
            decoded.append(record_arrays(file, int(offset), [key])[key][:])
    t_dec = time.perf_counter() - t0
    n = sum(len(d) for d in decoded)
    print(f"decode: {n} frames in {t_dec:.2f} s = {n / t_dec:.0f} frames/s (listing, CRCs, parsing, JPEG)")
    # VAE only, on the same frames resized as the job resizes them
    enc = FrameEncoder(cfg.vae, cfg.vae_preset, cfg.batch_size)
    small = [resize_center_crop(d, cfg.resolution) for d in decoded]
    enc.encode_frames(small[0][: cfg.batch_size])  # warm-up
    t0 = time.perf_counter()
    for d in small:
        enc.encode_frames(d)
    t_vae = time.perf_counter() - t0
    print(f"vae only: {n} frames in {t_vae:.2f} s = {n / t_vae:.0f} frames/s (one actor, {cfg.resolution} px)")
    # the whole job
    out = work / "latents"
    cmd = [sys.executable, str(ROOT / "preprocessing" / "encode_latents.py"), "--no-progress", "--rlds", str(folder),
           "--split", "train", "--source-fps", "10", "--config", args.config, "--set", "fps=null",
           "--output", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    m = re.search(r"encoded (\d+) frames in ([\d.]+)s \(([\d.]+) frames/s\)", proc.stdout)
    steps, secs = int(m.group(1)), float(m.group(2))
    frames = steps * len(CAMERAS)  # the summary counts time steps; every camera's frame goes through the VAE
    rate = frames / secs
    print(f"job: {steps} steps x {len(CAMERAS)} cameras = {frames} frames in {secs:.1f} s = {rate:.1f} frames/s "
          f"(its summary; {wall:.1f} s with Ray start) = {100 * rate / (n / t_vae):.0f}% of the VAE-only rate")
    # memory of one long episode, in a fresh process
    probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(ROOT), str(folder), args.config],
                           capture_output=True, text=True, cwd=ROOT)
    if probe.returncode:
        raise SystemExit(probe.stdout[-2000:] + probe.stderr[-2000:])
    mem = json.loads(probe.stdout.strip().splitlines()[-1])
    long_file = folder / "bench_rlds-long.tfrecord-00000-of-00001"
    raw_mb = args.long_steps * 2 * args.size * args.size * 3 / 1e6
    print(f"memory: one {mem['frames']}-step episode (2 cameras) decoded and encoded in {mem['peak_rss_mb']:.0f} MB "
          f"peak RSS; its record {long_file.stat().st_size / 1e6:.1f} MB, its frames decoded {raw_mb:.0f} MB")


if __name__ == "__main__":
    main()
