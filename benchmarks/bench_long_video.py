"""Encoding long videos: peak memory and frames/s for 1-, 10- and 30-minute 720p videos.

    python benchmarks/bench_long_video.py [--minutes 1 10 30] [--source-fps 10] [--chunk-frames 512]
                                          [--whole-up-to 10]

Generates each video (1280x720 h264, a moving pattern, written frame by frame), then encodes it
in a fresh process the way the encode job's VAE actor does for an episode longer than
``chunk_frames``: ``FrameEncoder.encode_streaming`` (decode and encode ``chunk_frames`` frames at
a time, default config: 10 fps, 96 px, shipped VAE, fp32 on the CPU). Videos up to
``--whole-up-to`` minutes are also encoded the old way (whole episode decoded, then encoded) for
comparison. Peak memory is the encoding process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, time
from preprocessing.encode import EncodeConfig, FrameEncoder, decode_episode
from preprocessing.sources import Episode
from uva_io.assets import find_artifact
from uva_io.config import load_config
path, mode, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = load_config(EncodeConfig, "configs/preprocess/default.yaml", [f"chunk_frames={chunk}"])
enc = FrameEncoder(str(find_artifact(cfg.vae)), None, cfg.batch_size, threads=2)
ep = Episode("long", {"main": path}, "human")
t = time.perf_counter()
if mode == "stream":
    out = enc.encode_streaming(ep, cfg)
else:
    cfg.chunk_frames = 1 << 30
    out = enc.encode_episode(decode_episode(ep, cfg))
seconds = time.perf_counter() - t
if "error" in out:
    sys.exit(out["error"])
frames = len(out["latents"]["main"])
print(json.dumps({"frames": frames, "seconds": seconds,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_long_video(path: Path, minutes: float, fps: int) -> int:
    import av
    import numpy as np

    n = int(minutes * 60 * fps)
    h, w = 720, 1280
    yy, xx = np.mgrid[0:h, 0:w]
    base = ((xx // 4 + yy // 4) % 256).astype(np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        for t in range(n):
            frame = np.stack([np.roll(base, 3 * t, axis=1), np.roll(base, 2 * t, axis=0), base], -1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", nargs="+", type=float, default=[1, 10, 30])
    p.add_argument("--source-fps", type=int, default=10)
    p.add_argument("--chunk-frames", type=int, default=512)
    p.add_argument("--whole-up-to", type=float, default=10, help="also encode videos this long whole")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_long_"))
    print(f"{'minutes':>7} {'src frames':>10} {'path':7} {'latents':>8} {'frames/s':>9} {'peak MB':>8}  (gen s)")
    for minutes in args.minutes:
        video = work / f"v{minutes:g}min.mp4"
        t = time.perf_counter()
        n = write_long_video(video, minutes, args.source_fps)
        gen = time.perf_counter() - t
        modes = ["stream"] + (["whole"] if minutes <= args.whole_up_to else [])
        for mode in modes:
            proc = subprocess.run([sys.executable, "-c", CHILD, str(video), mode, str(args.chunk_frames)],
                                  cwd=ROOT, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(proc.stderr[-3000:])
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{minutes:7g} {n:10d} {mode:7} {r['frames']:8d} {r['frames'] / r['seconds']:9.1f} "
                  f"{r['peak_mb']:8.0f}  ({gen:.0f})", flush=True)
        video.unlink()


if __name__ == "__main__":
    main()
