"""Encoding throughput: end-to-end encode_latents.py frames/s against decode-only and VAE-only.

    python benchmarks/bench_encode.py [--episodes 24] [--config configs/preprocess/default.yaml]

Generates demo videos (or takes --manifest), then measures on the same inputs:
decode-only (read_clip, one process), encode-only (the VAE on already decoded frames, one
actor's work) and the real job (local Ray, subprocess). The slower of the first two, times the
parallelism the job gets, bounds the third.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
from preprocessing.encode import EncodeConfig, FrameEncoder
from preprocessing.sources import read_manifest
from uva_io.config import load_config
from uva_io.video import read_clip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--manifest", default=None)
    p.add_argument("--episodes", type=int, default=24)
    p.add_argument("--config", default=str(ROOT / "configs/preprocess/default.yaml"))
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    cfg = load_config(EncodeConfig, args.config, args.set)
    work = Path(tempfile.mkdtemp(prefix="bench_encode_"))
    manifest = args.manifest
    if manifest is None:
        subprocess.run([str(Path(sys.executable).parent / "uva-make-synthetic-demos"), "--output",
                        str(work / "demos"), "--num-episodes", str(args.episodes), "--num-steps", "100"],
                       check=True, capture_output=True)
        manifest = str(work / "demos" / "manifest.jsonl")
    episodes, _ = read_manifest(manifest)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"inputs: {len(episodes)} episodes; resolution {cfg.resolution}, fps {cfg.fps}; VAE device {device}")

    t = time.perf_counter()
    clips = [read_clip(v, cfg.fps, cfg.resolution).frames for ep in episodes for v in ep.videos.values()]
    decode_s = time.perf_counter() - t
    frames = sum(len(c) for c in clips)
    print(f"decode-only : {frames / decode_s:9.1f} frames/s  ({frames} frames, 1 process)")

    enc = FrameEncoder(str(ROOT / cfg.vae) if not Path(cfg.vae).is_absolute() else cfg.vae,
                       cfg.vae_preset, cfg.batch_size, threads=torch.get_num_threads())
    enc.encode_frames(clips[0][:8])  # warm-up
    t = time.perf_counter()
    for c in clips:
        enc.encode_frames(c)
    if device == "cuda":
        torch.cuda.synchronize()
    encode_s = time.perf_counter() - t
    print(f"encode-only : {frames / encode_s:9.1f} frames/s  (batch {cfg.batch_size}, {torch.get_num_threads()} threads)")

    cmd = [str(Path(sys.executable).parent / "uva-encode"), "--no-progress", "--config", args.config,
           "--manifest", manifest, "--output", str(work / "latents"), *sum((["--set", s] for s in args.set), [])]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if proc.returncode:
        sys.exit(proc.stdout + proc.stderr)
    job_rate = float(re.search(r"\(([\d.]+) frames/s\)", proc.stdout).group(1))
    print(f"end-to-end  : {job_rate:9.1f} frames/s  inside the job; {frames / wall:.1f} frames/s counting Ray start-up ({wall:.1f}s)")
    print(f"ceiling     : {min(frames / decode_s, frames / encode_s):9.1f} frames/s  (slower of decode/encode, one worker each)")


if __name__ == "__main__":
    main()
