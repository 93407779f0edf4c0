"""Episodes stored as arrays rather than videos: Diffusion Policy / UMI zarr replay buffers and
robomimic / LIBERO HDF5 files.

    zarr replay buffer (Diffusion Policy's ReplayBuffer, UMI):   a folder or a .zarr.zip
      data/<image key>   (N, H, W, 3) uint8   every frame of every episode, back to back
      data/action        (N, A)               data/state (or the --proprio keys) (N, P)
      meta/episode_ends  (E,) int             exclusive end of each episode in N
    robomimic / LIBERO HDF5:
      data/demo_<i>/obs/<camera>_image | <camera>_rgb   (T, H, W, 3) uint8
      data/demo_<i>/actions (T, A)    data/demo_<i>/obs/<state keys> (T, .)
      data.attrs["problem_info"]  (LIBERO) JSON with "language_instruction"

Neither format records its frame rate: the caller gives it (``--source-fps``). A camera, an
action or a state array is named by a reference string that the encode workers open:

    zarr:<store>::<array>::<from>:<to>     rows [from, to) of one array of a zarr store
    hdf5:<file>::<dataset>[+<dataset>...]  a whole dataset (several: concatenated on the last axis)
    rlds:<tfrecord>#<offset>::<feature>[+<feature>...]  features of one RLDS episode record
                                           (preprocessing/rlds.py; frames decoded chunk by chunk)
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from preprocessing.sources import Episode, sanitize_key
from uva_io import storage
from uva_io.video import DecodeError, resample_indices, resize_center_crop

ARRAY_KINDS = ("zarr", "hdf5", "rlds")
IMAGE_SUFFIXES = ("_image", "_rgb")
# proprioception of the common layouts, first match wins (their arrays are concatenated)
HDF5_PROPRIO = (("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"),  # robomimic
                ("ee_states", "gripper_states"))  # LIBERO


def is_array_ref(ref: str) -> bool:
    return str(ref).split(":", 1)[0] in ARRAY_KINDS


def _local_only(path: str, kind: str) -> str:
    if storage.is_remote(path):
        raise ValueError(f"{path}: {kind} inputs are read from a local (or mounted) path; copy it here first")
    if not Path(path).exists():
        raise ValueError(f"{path}: does not exist")
    return str(path)


@contextlib.contextmanager
def open_zarr(path: str):
    """The root group of a zarr store: a folder, or a .zip (Diffusion Policy's ``.zarr.zip``)."""
    import zarr

    path = _local_only(path, "zarr")
    if path.endswith(".zip"):
        store = zarr.storage.ZipStore(path, mode="r")
        try:
            yield zarr.open_group(store=store, mode="r")
        finally:
            store.close()
    else:
        yield zarr.open_group(path, mode="r")


def parse_ref(ref: str) -> tuple[str, str, list[str], tuple[int, int] | None]:
    """(kind, file, array names, row range or None)."""
    kind, _, body = ref.partition(":")
    parts = body.split("::")
    if kind not in ARRAY_KINDS or len(parts) not in (2, 3):
        raise ValueError(f"{ref}: not an array reference (zarr:<store>::<array>::<from>:<to>, hdf5:<file>::<dataset> "
                         f"or rlds:<file>#<offset>::<feature>)")
    rows = None
    if len(parts) == 3:
        lo, hi = parts[2].split(":")
        rows = (int(lo), int(hi))
    return kind, parts[0], parts[1].split("+"), rows


class ArrayReader:
    """Rows of one array reference: its length, and ``read(lo, hi)`` (several arrays
    concatenated on the last axis). Opened and closed with ``with``."""

    def __init__(self, ref: str):
        self.ref = ref
        self.kind, self.file, self.names, self.rows = parse_ref(ref)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "ArrayReader":
        if self.kind == "zarr":
            root = self._stack.enter_context(open_zarr(self.file))
        elif self.kind == "rlds":
            from preprocessing.rlds import record_arrays

            file, _, offset = self.file.rpartition("#")
            root = record_arrays(file, int(offset), self.names)
        else:
            import h5py

            root = self._stack.enter_context(h5py.File(_local_only(self.file, "hdf5"), "r"))
        try:  # a bad reference closes the file before it is reported
            self._check(root)
        except BaseException:
            self._stack.close()
            raise
        return self

    def _check(self, root) -> None:
        missing = [n for n in self.names if n not in root]
        if missing:
            raise ValueError(f"{self.file}: no array '{missing[0]}' (arrays named by {self.ref})")
        self.arrays = [root[n] for n in self.names]
        first = self.arrays[0].shape[0]
        if any(a.shape[0] != first for a in self.arrays):
            raise ValueError(f"{self.ref}: the arrays have different lengths {[a.shape[0] for a in self.arrays]}")
        self.offset, end = self.rows if self.rows else (0, first)
        if not 0 <= self.offset <= end <= first:
            raise ValueError(f"{self.ref}: rows [{self.offset}, {end}) outside the array's {first}")
        self.length = end - self.offset

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def read(self, lo: int, hi: int) -> np.ndarray:
        parts = [np.asarray(a[self.offset + lo : self.offset + hi]) for a in self.arrays]
        parts = [p[:, None] if p.ndim == 1 else p for p in parts]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, -1)


def load_array_ref(ref: str) -> np.ndarray:
    """A whole (T, D) float array of a reference (actions, proprioception)."""
    with ArrayReader(ref) as r:
        return r.read(0, r.length)


class ArrayClipReader:
    """``ClipReader``'s interface over stored frames: chunks of resampled, resized frames."""

    def __init__(self, ref: str, source_fps: float | None, fps: float | None, size: int, chunk_frames: int = 256):
        if not source_fps:
            raise ValueError(f"{ref}: stored frames have no frame rate of their own; give the source fps")
        self.path, self.fps, self.size, self.chunk_frames = ref, fps, size, chunk_frames
        self.source_fps, self.num_source_frames, self.backend = float(source_fps), 0, "array"

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        with ArrayReader(self.path) as r:
            self.num_source_frames = r.length
            shape = r.arrays[0].shape
            if len(r.arrays) != 1 or len(shape) != 4 or shape[-1] != 3:
                raise DecodeError(f"{self.path}: frames must be one (T, H, W, 3) array, got {shape}")
            idx = resample_indices(r.length, self.source_fps, self.fps)
            for k in range(0, len(idx), self.chunk_frames):
                part = idx[k : k + self.chunk_frames]
                block = r.read(int(part[0]), int(part[-1]) + 1)  # one contiguous read, then the kept rows
                frames = block[part - part[0]]
                if frames.dtype != np.uint8:
                    raise DecodeError(f"{self.path}: frames must be uint8, got {frames.dtype}")
                yield resize_center_crop(np.ascontiguousarray(frames), self.size), part


def _cameras(names: list[str], wanted: list[str] | None, where: str) -> dict[str, str]:
    """{camera: array name} of image arrays (the wanted ones, or all)."""
    if wanted:
        missing = [w for w in wanted if w not in names]
        if missing:
            raise ValueError(f"{where}: no image array {missing} (arrays: {sorted(names)})")
        names = wanted
    cams = {}
    for n in names:
        cam = n
        for suffix in IMAGE_SUFFIXES:
            cam = cam[: -len(suffix)] if cam.endswith(suffix) else cam
        cams[sanitize_key(cam)] = n
    return cams


def read_zarr_replay(path: str, robot: str, source_fps: float | None, image_keys: list[str] | None = None,
                     action_key: str = "action", proprio_keys: list[str] | None = None,
                     instruction: str | None = None) -> tuple[list[Episode], list[dict]]:
    """A zarr replay buffer's episodes (see the module docstring). Image arrays: ``image_keys``,
    else every (N, H, W, 3) uint8 array of data/; proprioception: ``proprio_keys``, else
    data/state when there is one."""
    if not source_fps:
        raise ValueError(f"--zarr {path}: give the frame rate of its episodes (--source-fps; Diffusion Policy's "
                         f"PushT: 10, UMI: 60)")
    with open_zarr(path) as root:
        if "data" not in root or "meta" not in root or "episode_ends" not in root["meta"]:
            raise ValueError(f"--zarr {path}: not a replay buffer (needs data/ and meta/episode_ends)")
        data = root["data"]
        arrays = {k: data[k] for k in sorted(data.array_keys())}
        images = [k for k, a in arrays.items() if len(a.shape) == 4 and a.shape[-1] == 3 and a.dtype == np.uint8]
        cams = _cameras(images, image_keys, f"--zarr {path}")
        if not cams:
            raise ValueError(f"--zarr {path}: no (N, H, W, 3) uint8 image array in data/ ({sorted(arrays)})")
        ends = np.asarray(root["meta"]["episode_ends"][:], dtype=np.int64)
        total = next(iter(arrays.values())).shape[0]
    if proprio_keys is None:
        proprio_keys = ["state"] if "state" in arrays else []
    for key in [action_key, *proprio_keys]:
        if key and key not in arrays:
            raise ValueError(f"--zarr {path}: no array data/{key} (arrays: {sorted(arrays)})")
    name = sanitize_key(Path(path.rstrip("/")).name.split(".")[0])
    episodes, errors, lo = [], [], 0
    for i, hi in enumerate(ends):
        hi = int(hi)
        where = f"{path}#episode={i}"
        if hi <= lo or hi > total:
            errors.append({"input": where, "reason": f"episode_ends[{i}] = {hi} after {lo} (of {total} rows)"})
            lo = max(lo, min(hi, total))
            continue
        rows = f"{lo}:{hi}"
        ref = lambda keys: f"zarr:{path}::{'+'.join(f'data/{k}' for k in keys)}::{rows}"  # noqa: E731
        episodes.append(Episode(
            episode_id=f"{name}_{i:06d}", videos={cam: ref([k]) for cam, k in cams.items()}, robot=robot,
            fps=float(source_fps), actions=ref([action_key]) if action_key in arrays else None,
            proprio=ref(proprio_keys) if proprio_keys else None, instruction=instruction, source=where))
        lo = hi
    return episodes, errors


def _demo_order(key: str) -> tuple[int, str]:
    m = re.search(r"(\d+)$", key)
    return (int(m.group(1)) if m else -1, key)


def read_hdf5(path: str, robot: str, source_fps: float | None, image_keys: list[str] | None = None,
              action_key: str = "actions", proprio_keys: list[str] | None = None,
              instruction: str | None = None) -> tuple[list[Episode], list[dict]]:
    """A robomimic / LIBERO HDF5 file's demos (see the module docstring). The instruction is
    LIBERO's ``problem_info`` language_instruction when present, else ``instruction``."""
    import h5py

    if not source_fps:
        raise ValueError(f"--hdf5 {path}: give the frame rate of its demos (--source-fps; robomimic and LIBERO: 20)")
    episodes, errors = [], []
    with h5py.File(_local_only(path, "hdf5"), "r") as f:
        if "data" not in f:
            raise ValueError(f"--hdf5 {path}: not a robomimic/LIBERO file (no data/ group)")
        data = f["data"]
        info = data.attrs.get("problem_info")
        if info is not None:
            text = json.loads(info if isinstance(info, str) else info.decode()).get("language_instruction")
            instruction = text.strip() if text else instruction
        name = sanitize_key(Path(path).stem)
        for demo in sorted(data.keys(), key=_demo_order):
            g = data[demo]
            where = f"{path}#{demo}"
            obs = g.get("obs")
            if obs is None:
                errors.append({"input": where, "reason": "no obs/ group"})
                continue
            images = [k for k in sorted(obs.keys()) if k.endswith(IMAGE_SUFFIXES) and obs[k].ndim == 4
                      and obs[k].shape[-1] == 3 and obs[k].dtype == np.uint8]
            try:
                cams = _cameras(images, image_keys, where)
            except ValueError as err:
                errors.append({"input": where, "reason": str(err)})
                continue
            if not cams:
                errors.append({"input": where, "reason": f"no (T, H, W, 3) uint8 *_image / *_rgb array in obs/ "
                                                         f"({sorted(obs.keys())})"})
                continue
            keys = proprio_keys
            if keys is None:
                keys = next((list(ks) for ks in HDF5_PROPRIO if all(k in obs for k in ks)), [])
            missing = [k for k in keys if k not in obs]
            if missing:
                errors.append({"input": where, "reason": f"no obs/{missing[0]} (obs: {sorted(obs.keys())})"})
                continue
            base = f"data/{demo}"
            episodes.append(Episode(
                episode_id=f"{name}_{sanitize_key(demo)}",
                videos={cam: f"hdf5:{path}::{base}/obs/{k}" for cam, k in cams.items()}, robot=robot,
                fps=float(source_fps), actions=f"hdf5:{path}::{base}/{action_key}" if action_key in g else None,
                proprio=f"hdf5:{path}::{'+'.join(f'{base}/obs/{k}' for k in keys)}" if keys else None,
                instruction=instruction, source=where))
    return episodes, errors
