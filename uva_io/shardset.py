"""The latent shard set format: atomic WebDataset tar writing, reading back, index and statistics.

The one owner of the format: the encode job writes shard sets through it, the training loader
and fine-tuning read them through it.

A shard set is a folder:
    latents-000000.tar ...      WebDataset tars, one sample per episode
    latents-000000.json ...     per-shard sidecar (episodes, frame counts, skipped inputs)
    index.json                  all shards/episodes, the preprocessing config and the VAE identity
    stats.json                  per-robot action statistics (mean, std, min, max, q01, q99)
    errors.jsonl                every skipped input with its reason

A sample's members: ``latents.<camera>.npy`` (T, C, h, w) float16 at the latent rate (meta
``fps``), ``actions.npy`` (N, A) float32 (absent for action-free video) and ``proprio.npy``
(N, P) float32 (optional) with every row at the robot's control rate (meta ``control_hz``,
``num_rows``), ``frame_index.npy`` (T,) int64 the row of each latent frame, ``meta.json``.
Sets written before actions kept their control rate have no ``frame_index.npy`` and one
action row per latent frame; the loader reads them as it did.
Tars and sidecars are written under a temporary name and renamed when complete (in object
storage: built locally and uploaded, an object appearing only when whole), so a reader (or a
resumed job) never sees a torn shard. The folder may be a URL (``s3://bucket/prefix``,
``uva_io.storage``). No member is ever pickled.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from uva_io import storage

INDEX_FORMAT = "uva-latents/1"


def shard_name(prefix: str, idx: int) -> str:
    return f"{prefix}-{idx:06d}"


def write_shard(out_dir: str | Path, prefix: str, idx: int, samples: list[dict], sidecar: dict) -> str:
    """Write samples (dicts of member name -> bytes, plus '__key__') as one tar, atomically.

    The sidecar JSON is in place before the tar: a tar that exists is always complete and always
    has its sidecar. ``out_dir`` may be a URL: the tar is built in a local temp file, then uploaded.
    """
    name = shard_name(prefix, idx)
    remote = storage.is_remote(out_dir)
    tar_path = storage.join(out_dir, f"{name}.tar")
    if remote:
        fd, local = tempfile.mkstemp(prefix=f".{name}.", suffix=".tar.tmp")
        os.close(fd)
        tmp = Path(local)
    else:
        tmp = Path(out_dir) / f".{name}.tar.tmp"
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            key = sample["__key__"]
            for member in sorted(k for k in sample if k != "__key__"):
                data = sample[member]
                info = tarfile.TarInfo(f"{key}.{member}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    storage.write_bytes(storage.join(out_dir, f"{name}.json"), json.dumps(sidecar, indent=1).encode())
    try:
        storage.upload(tmp, tar_path)
    finally:
        tmp.unlink(missing_ok=True)
    return tar_path


def decode_member(name: str, data: bytes):
    if name.endswith(".npy"):
        return np.load(io.BytesIO(data), allow_pickle=False)
    if name.endswith(".json"):
        return json.loads(data)
    return data


def iter_tar_samples(path: str | Path, members: tuple[str, ...] | None = None) -> Iterator[dict]:
    """Samples of one shard tar as dicts (member -> decoded value, '__key__').

    ``members`` limits decoding to those member names (e.g. ('actions.npy', 'meta.json')).
    """
    with storage.open_read(path) as f, tarfile.open(fileobj=f, mode="r|") as tar:
        current: dict | None = None
        for info in tar:
            if not info.isfile():
                continue
            key, _, member = info.name.partition(".")
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key}
            if members is None or member in members:
                current[member] = decode_member(member, tar.extractfile(info).read())
        if current is not None:
            yield current


class RunningStats:
    """Per-dimension action statistics: exact moments, quantiles from a bounded sample."""

    def __init__(self, max_quantile_rows: int = 2_000_000):
        self.count = 0
        self.sum = self.sumsq = self.min = self.max = None
        self.rows: list[np.ndarray] = []
        self.max_rows = max_quantile_rows

    def update(self, x: np.ndarray) -> None:
        x64 = x.astype(np.float64)
        if self.sum is None:
            self.sum, self.sumsq = x64.sum(0), (x64**2).sum(0)
            self.min, self.max = x64.min(0), x64.max(0)
        else:
            if x.shape[1] != self.sum.shape[0]:
                raise ValueError(f"action dimension {x.shape[1]} differs from {self.sum.shape[0]} seen before")
            self.sum += x64.sum(0)
            self.sumsq += (x64**2).sum(0)
            self.min, self.max = np.minimum(self.min, x64.min(0)), np.maximum(self.max, x64.max(0))
        self.count += len(x)
        self.rows.append(x.astype(np.float32))
        if sum(len(r) for r in self.rows) > 2 * self.max_rows:
            # keep every other row: a deterministic thinning that bounds memory
            self.rows = [np.concatenate(self.rows)[::2]]

    def result(self) -> dict:
        mean = self.sum / self.count
        std = np.sqrt(np.maximum(self.sumsq / self.count - mean**2, 0.0))
        rows = np.concatenate(self.rows)
        q01, q99 = np.quantile(rows, [0.01, 0.99], axis=0)
        as_list = lambda a: [float(v) for v in a]  # noqa: E731
        return {"count": int(self.count), "dim": int(len(mean)), "mean": as_list(mean),
                "std": as_list(std), "min": as_list(self.min), "max": as_list(self.max),
                "q01": as_list(q01), "q99": as_list(q99)}


def compute_action_stats(tar_paths: list[Path]) -> dict:
    """Per-robot action statistics over every episode with actions in the given shards.

    A robot whose episodes carry proprioception also gets its statistics, under "proprio"
    in its entry (same keys as the action statistics).
    """
    per_robot: dict[str, RunningStats] = {}
    per_proprio: dict[str, RunningStats] = {}
    for path in tar_paths:
        for sample in iter_tar_samples(path, members=("actions.npy", "proprio.npy", "meta.json")):
            if "actions.npy" not in sample:
                continue
            robot = sample["meta.json"]["robot"]
            per_robot.setdefault(robot, RunningStats()).update(sample["actions.npy"])
            if "proprio.npy" in sample:
                per_proprio.setdefault(robot, RunningStats()).update(sample["proprio.npy"])
    out = {robot: stats.result() for robot, stats in sorted(per_robot.items())}
    for robot, stats in per_proprio.items():
        out[robot]["proprio"] = stats.result()
    return out


def load_index(folder: str | Path) -> dict:
    """Read a shard set's index.json with a clear error when it is missing or foreign."""
    path = storage.join(folder, "index.json")
    try:
        index = json.loads(storage.read_text(path))
    except FileNotFoundError:
        raise ValueError(f"{folder}: no index.json; not a finished latent shard set") from None
    if index.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path}: format {index.get('format')!r} is not {INDEX_FORMAT!r}")
    return index


def read_stats(folder: str | Path) -> dict:
    """Per-robot action statistics of one shard set (empty for action-free sets)."""
    try:
        return json.loads(storage.read_text(storage.join(folder, "stats.json")))
    except FileNotFoundError:
        return {}
