"""Per-episode work of the encoding job: decode + validate (CPU), VAE encode (actor), pack.

These functions are plain Python; ``encode_latents.py`` wraps them in Ray tasks and actors.
An episode that cannot be used comes back as ``{"episode_id", "error"}``, never as an exception,
so one bad video never stops a job.

Memory is bounded by ``chunk_frames``, not by an episode's length: a decode task that finds
more than ``chunk_frames`` frames in an episode stops and hands the episode to a VAE actor,
which decodes and encodes it ``chunk_frames`` frames at a time (``encode_streaming``); only the
latents (about 1/600 of the frames' size at the defaults) are held whole.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, replace

import numpy as np
import torch

from preprocessing.sources import Episode, load_array
from uva_io import storage
from uva_io.files import npy_bytes
from uva_io.vae_bundle import encode_frames, load_vae
from uva_io.video import ClipReader, DecodeError


@dataclass
class EncodeConfig:
    """Settings of the latent encoding job (configs/preprocess/*.yaml)."""

    fps: float | None = 10.0  # target frame rate of stored latents; null keeps the source rate
    resolution: int = 96  # frames are resized (short side) and center-cropped to this square
    vae: str = "artifacts/vae/vae-default-kl8.safetensors"  # VAE bundle or .ckpt
    vae_preset: str | None = None  # layout preset for a .ckpt VAE (e.g. kl16)
    batch_size: int = 64  # frames per VAE forward pass
    episodes_per_shard: int = 8  # episodes stored in one tar (deterministic, in input order)
    shard_prefix: str = "latents"  # shard files are <prefix>-%06d.tar
    num_encoders: int = 1  # VAE actors (one GPU each when the cluster has GPUs)
    encoder_threads: int = 1  # torch CPU threads per VAE actor
    max_in_flight: int = 4  # episodes decoded/encoded at once (bounds memory; at least one shard's episodes)
    min_frames: int = 2  # episodes shorter than this (after resampling) are skipped
    vae_precision: str = "auto"  # fp32, bf16, or auto (bf16 when the VAE actors have GPUs); kept in index.json
    chunk_frames: int = 512  # frames (per camera) decoded and held at once; longer episodes stream through the actor
    clip_seconds: float | None = None  # cut action-free videos into clips of this length (null: whole videos)
    text_encoder: str = "hash"  # instructions -> lang.npy: hash[:DIM] (built in) or transformers:FOLDER (uva_io.text)
    text_tokens: int = 16  # tokens kept per instruction (padded / truncated)

    # settings that change what is written; a resumed run must agree on these
    OUTPUT_KEYS = ("fps", "resolution", "episodes_per_shard", "shard_prefix", "min_frames", "clip_seconds")

    def validate(self) -> None:
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"config key 'fps' must be positive or null, got {self.fps}")
        for key in ("resolution", "batch_size", "episodes_per_shard", "num_encoders",
                    "encoder_threads", "max_in_flight", "min_frames", "chunk_frames"):
            if getattr(self, key) <= 0:
                raise ValueError(f"config key '{key}' must be positive, got {getattr(self, key)}")
        if self.clip_seconds is not None and self.clip_seconds <= 0:
            raise ValueError(f"config key 'clip_seconds' must be positive or null, got {self.clip_seconds}")
        if self.vae_precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"config key 'vae_precision' must be auto, fp32 or bf16, got {self.vae_precision!r}")
        if not self.shard_prefix or "/" in self.shard_prefix:
            raise ValueError(f"config key 'shard_prefix' must be a plain name, got {self.shard_prefix!r}")


def _readers(ep: Episode, cfg: EncodeConfig, streaming: bool = False) -> dict[str, ClipReader]:
    from preprocessing.arrays import ArrayClipReader, is_array_ref

    return {cam: ArrayClipReader(path, ep.fps, cfg.fps, cfg.resolution, cfg.chunk_frames) if is_array_ref(path)
            else ClipReader(path, cfg.fps, cfg.resolution, *ep.segments.get(cam, (0.0, None)),
                            chunk_frames=cfg.chunk_frames, streaming=streaming)
            for cam, path in ep.videos.items()}


def _finish(ep: Episode, cfg: EncodeConfig, readers: dict[str, ClipReader], indices: list[np.ndarray],
            per_cam: dict[str, list[np.ndarray]], key: str) -> dict:
    """Check the cameras agree, load the per-frame arrays at the kept indices, assemble."""
    indices = np.concatenate(indices) if indices else np.zeros(0, np.int64)
    counts = {cam: sum(len(x) for x in parts) for cam, parts in per_cam.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"cameras have different frame counts: {counts}")
    if len(indices) < cfg.min_frames:
        raise ValueError(f"only {len(indices)} frame(s) after resampling (min_frames={cfg.min_frames})")
    first = next(iter(readers.values()))
    num_source = first.num_source_frames
    cut = {cam: r.truncated for cam, r in readers.items() if getattr(r, "truncated", None)}
    if cut and (ep.actions or ep.proprio):
        cam, (got, declared) = next(iter(cut.items()))
        raise ValueError(f"video '{cam}' is truncated: {got} of the {declared} frames its container declares "
                         f"decode, so the episode's per-frame rows no longer match it")
    arrays = {}
    for name, ref in (("actions", ep.actions), ("proprio", ep.proprio)):
        if ref is None:
            continue
        arr = load_array(ref)
        if len(arr) != num_source:
            raise ValueError(f"{name} has {len(arr)} rows but the video has {num_source} frames")
        arrays[name] = arr  # every row, at the source's control rate: never resampled to the latent rate
    out = {"episode_id": ep.episode_id, key: {cam: np.concatenate(parts) for cam, parts in per_cam.items()},
           "arrays": arrays, "source_fps": first.source_fps, "num_source_frames": num_source,
           "frame_index": indices}  # the source row of each kept frame
    if cut:  # action-free video: kept as far as it decodes, and said
        out["truncated"] = {cam: {"decoded": got, "declared": declared} for cam, (got, declared) in cut.items()}
    return out


def _lockstep(readers: dict[str, ClipReader]):
    """(indices, {camera: frames}) per chunk, every camera advancing together."""
    iters = {cam: iter(r) for cam, r in readers.items()}
    while True:
        step = {}
        for cam, it in iters.items():
            step[cam] = next(it, None)
        done = [cam for cam, c in step.items() if c is None]
        if done:
            if len(done) != len(step):
                raise ValueError(f"camera '{done[0]}' ended before the others")
            return
        idx = next(iter(step.values()))[1]
        yield idx, {cam: c[0] for cam, c in step.items()}


def _local(ep: Episode, stack: contextlib.ExitStack) -> Episode:
    """The episode with its whole videos in object storage downloaded to temporary files (removed
    with ``stack``). A camera given as a time segment of a shared file (LeRobot: many episodes
    per file) stays a URL: the decoder seeks in it with range requests instead of fetching the
    whole file once per episode."""
    from preprocessing.arrays import is_array_ref

    def fetch(cam: str, v: str) -> bool:  # array references (an RLDS record) read their own storage
        return storage.is_remote(v) and cam not in ep.segments and not is_array_ref(v)

    if not any(fetch(cam, v) for cam, v in ep.videos.items()):
        return ep
    return replace(ep, videos={cam: stack.enter_context(storage.local_copy(v)) if fetch(cam, v) else v
                               for cam, v in ep.videos.items()})


def decode_episode(ep: Episode, cfg: EncodeConfig) -> dict:
    """Decode every camera and load per-frame arrays, resampled to ``cfg.fps``. An episode of
    more than ``cfg.chunk_frames`` frames is not held: the result is ``{"episode_id", "stream":
    True}`` and the VAE actor's ``encode_streaming`` takes it in chunks."""
    try:
        with contextlib.ExitStack() as stack:
            return _decode(_local(ep, stack), cfg)
    except (DecodeError, ValueError, OSError) as err:
        return {"episode_id": ep.episode_id, "error": str(err)}


def _decode(ep: Episode, cfg: EncodeConfig) -> dict:
    readers = _readers(ep, cfg)
    indices, per_cam = [], {cam: [] for cam in readers}
    for n, (idx, frames) in enumerate(_lockstep(readers)):
        if n:  # a second chunk: too long to hold
            return {"episode_id": ep.episode_id, "stream": True}
        indices.append(idx)
        for cam, f in frames.items():
            per_cam[cam].append(f)
    return _finish(ep, cfg, readers, indices, per_cam, "frames")


class FrameEncoder:
    """Runs a frozen VAE over uint8 frames in fixed-size batches (on the GPU when there is one)."""

    def __init__(self, vae_path: str, preset: str | None, batch_size: int, threads: int = 1,
                 precision: str = "fp32"):
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.precision = precision
        if self.device == "cpu":
            torch.set_num_threads(threads)
        self.vae = load_vae(vae_path, preset=preset, device=self.device)
        self.batch_size = batch_size

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8 -> (T, C, h, w) float16 scaled latents."""
        return encode_frames(self.vae, frames, self.batch_size, self.precision)

    def encode_episode(self, decoded: dict) -> dict:
        """One decoded episode (``encode_episodes`` of one)."""
        return self.encode_episodes(decoded)[0]

    def encode_episodes(self, *decoded: dict) -> list[dict]:
        """Several decoded episodes at once: their frames (every camera) go through the VAE in
        shared batches of ``batch_size``, then are split back per episode and camera."""
        parts = [(i, cam, f) for i, d in enumerate(decoded) if "frames" in d for cam, f in d["frames"].items()]
        out = list(decoded)  # errors and long episodes (for encode_streaming) pass through
        if parts:
            z = self.encode_frames(np.concatenate([f for _, _, f in parts]))
            latents: dict[int, dict[str, np.ndarray]] = {}
            lo = 0
            for i, cam, f in parts:
                latents.setdefault(i, {})[cam] = z[lo : lo + len(f)]
                lo += len(f)
            for i, lat in latents.items():
                out[i] = {k: v for k, v in decoded[i].items() if k != "frames"} | {"latents": lat}
        return out

    def encode_streaming(self, ep: Episode, cfg: EncodeConfig) -> dict:
        """Decode and encode an episode ``cfg.chunk_frames`` frames at a time (a long video):
        the frames of one chunk are all that is held."""
        try:
            with contextlib.ExitStack() as stack:
                local = _local(ep, stack)
                readers = _readers(local, cfg, streaming=True)
                indices, per_cam = [], {cam: [] for cam in readers}
                for idx, frames in _lockstep(readers):
                    indices.append(idx)
                    for cam, f in frames.items():
                        per_cam[cam].append(self.encode_frames(f))
                return _finish(local, cfg, readers, indices, per_cam, "latents")
        except (DecodeError, ValueError, OSError) as err:
            return {"episode_id": ep.episode_id, "error": str(err)}


def pack_sample(ep: Episode, encoded: dict, cfg: EncodeConfig, vae_identity: str,
                lang: np.ndarray | None = None) -> tuple[dict, dict]:
    """Tar members of one episode, and its index record; ``lang`` is its instruction's embedding."""
    latents = encoded["latents"]
    first = next(iter(latents.values()))
    num_frames = int(first.shape[0])
    meta = {
        "episode_id": ep.episode_id, "robot": ep.robot, "fps": cfg.fps or encoded["source_fps"],
        "source_fps": encoded["source_fps"], "num_frames": num_frames,
        "cameras": sorted(latents), "latent_shape": list(first.shape[1:]),
        "has_actions": "actions" in encoded["arrays"], "instruction": ep.instruction,
        "vae": vae_identity, "source": ep.source,
    }
    if encoded.get("truncated"):
        meta["truncated"] = encoded["truncated"]
    if ep.metadata:
        meta["episode_metadata"] = ep.metadata
    if encoded["arrays"]:  # actions / proprioception at the source's rate, and where each frame sits in them
        meta["control_hz"] = float(encoded["source_fps"])
        meta["num_rows"] = int(next(iter(encoded["arrays"].values())).shape[0])
    if "actions" in encoded["arrays"]:
        meta["action_dim"] = int(encoded["arrays"]["actions"].shape[1])
    sample = {"__key__": ep.episode_id, "meta.json": json.dumps(meta).encode()}
    for cam, z in latents.items():
        sample[f"latents.{cam}.npy"] = npy_bytes(z)
    for name, arr in encoded["arrays"].items():
        sample[f"{name}.npy"] = npy_bytes(arr.astype(np.float32))
    if encoded["arrays"]:
        sample["frame_index.npy"] = npy_bytes(np.asarray(encoded["frame_index"], np.int64))
    if lang is not None:
        sample["lang.npy"] = npy_bytes(np.asarray(lang, np.float32))
    record = {k: meta[k] for k in ("robot", "num_frames", "has_actions", "cameras", "fps")}
    if "control_hz" in meta:
        record["control_hz"] = meta["control_hz"]
    return sample, record
