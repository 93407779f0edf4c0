"""Input sources for latent encoding: JSONL manifests, LeRobot v3.0 datasets, video folders,
each local or in object storage (s3://, gs://, http(s):// for manifests).

Each reader returns ``(episodes, errors)``: the episodes in a deterministic order and the
inputs it had to reject (bad JSON lines, missing fields, duplicate ids) with a reason. Nothing
is decoded here; the per-episode work (video, actions) happens in the encode workers, which
call ``load_actions`` / ``load_proprio``.

Manifest line (one episode):
    {"episode_id": "ep0001", "video": "ep0001.mp4" | {"front": "f.mp4", "wrist": "w.mp4"},
     "actions": "ep0001_actions.npy" | null, "robot": "pusht", "fps": 10,
     "instruction": "push the T", "proprio": "ep0001_state.npy"}
Relative paths are relative to the manifest's folder. Actions hold one row per video frame.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uva_io import storage

VIDEO_EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class Episode:
    """One episode to encode: cameras, optional per-frame arrays, metadata."""

    episode_id: str
    videos: dict[str, str]  # camera name -> video path
    robot: str
    fps: float | None = None  # source control/video rate; None = take it from the video
    actions: str | None = None  # .npy path, or "parquet:<file>:<from>:<to>:<column>"
    proprio: str | None = None  # same forms as actions
    instruction: str | None = None
    segments: dict[str, tuple[float, float | None]] = field(default_factory=dict)  # cam -> [start, end) s
    source: str = ""
    metadata: dict = field(default_factory=dict)  # kept in meta.json (an RLDS episode's episode_metadata)

    def to_json(self) -> dict:
        return {
            "episode_id": self.episode_id, "videos": self.videos, "robot": self.robot,
            "fps": self.fps, "actions": self.actions, "proprio": self.proprio,
            "instruction": self.instruction,
            "segments": {k: list(v) for k, v in self.segments.items()}, "source": self.source,
            "metadata": self.metadata,
        }


_KEY_RE = re.compile(r"[^A-Za-z0-9_-]+")


def sanitize_key(text: str) -> str:
    """WebDataset keys may not contain dots or slashes; keep them readable and unique-ish."""
    key = _KEY_RE.sub("_", text).strip("_")
    if not key:
        raise ValueError(f"episode id {text!r} has no usable characters")
    return key


def _resolve(base: str, p: str) -> str:
    """A manifest's path relative to the manifest's folder (a URL, or absolute, as given)."""
    if storage.is_remote(p) or Path(p).is_absolute():
        return p
    return storage.join(base, p)


def read_manifest(path: str | Path, default_robot: str = "unknown") -> tuple[list[Episode], list[dict]]:
    """Parse a JSONL manifest. Bad lines become errors, never exceptions."""
    base = posixpath.dirname(str(path)) if storage.is_remote(path) else str(Path(path).parent)
    episodes, errors, seen = [], [], set()
    for lineno, line in enumerate(storage.read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            errors.append({"input": where, "reason": f"manifest line is not valid JSON: {err.msg}"})
            continue
        if not isinstance(rec, dict):
            errors.append({"input": where, "reason": "manifest line is not a JSON object"})
            continue
        video = rec.get("video", rec.get("videos"))
        if isinstance(video, str):
            videos = {"main": _resolve(base, video)}
        elif isinstance(video, dict) and video and all(isinstance(v, str) for v in video.values()):
            videos = {sanitize_key(str(k)): _resolve(base, v) for k, v in sorted(video.items())}
        else:
            errors.append({"input": where, "reason": "field 'video' must be a path or a {camera: path} mapping"})
            continue
        raw_id = rec.get("episode_id", Path(next(iter(videos.values()))).stem)
        try:
            key = sanitize_key(str(raw_id))
        except ValueError as err:
            errors.append({"input": where, "reason": str(err)})
            continue
        if key in seen:
            errors.append({"input": where, "episode_id": key, "reason": f"duplicate episode id '{key}'"})
            continue
        fps = rec.get("fps")
        if fps is not None and (not isinstance(fps, (int, float)) or fps <= 0):
            errors.append({"input": where, "episode_id": key, "reason": f"field 'fps' must be a positive number, got {fps!r}"})
            continue
        seen.add(key)
        actions = rec.get("actions")
        proprio = rec.get("proprio")
        episodes.append(Episode(
            episode_id=key, videos=videos, robot=str(rec.get("robot", default_robot)),
            fps=float(fps) if fps else None,
            actions=_resolve(base, actions) if actions else None,
            proprio=_resolve(base, proprio) if proprio else None,
            instruction=rec.get("instruction"), source=where,
        ))
    return episodes, errors


def read_video_folder(folder: str | Path, robot: str = "human") -> tuple[list[Episode], list[dict]]:
    """Every video file under ``folder`` (recursively; a local folder or a URL prefix) as one
    action-free episode, its id the relative path without the extension."""
    base = str(folder).rstrip("/")
    episodes, errors, seen = [], [], set()
    for path in storage.find_files(base):
        rel = posixpath.relpath(path, base) if storage.is_remote(base) else str(Path(path).relative_to(base))
        stem, ext = posixpath.splitext(rel)
        if ext.lower() not in VIDEO_EXTS:
            continue
        key = sanitize_key(stem)
        if key in seen:
            errors.append({"input": path, "reason": f"duplicate episode id '{key}'"})
            continue
        seen.add(key)
        episodes.append(Episode(episode_id=key, videos={"main": path}, robot=robot, source=path))
    return episodes, errors


def _read_parquet(path: str, columns: list[str] | None = None):
    import pyarrow.parquet as pq

    if not storage.is_remote(path):
        return pq.read_table(path, columns=columns)
    with storage.open_read(path) as f:
        return pq.read_table(f, columns=columns)


def read_lerobot(root: str | Path, robot: str | None = None, action_key: str = "action",
                 proprio_key: str = "observation.state") -> tuple[list[Episode], list[dict]]:
    """A LeRobot dataset (a local folder or a URL prefix), the version from meta/info.json:
    v3.x (meta/episodes/*.parquet, many episodes per data and video file) or v2.0 / v2.1
    (meta/episodes.jsonl and tasks.jsonl, one parquet and one mp4 per episode and camera)."""
    root = str(root).rstrip("/")
    name = posixpath.basename(root) if storage.is_remote(root) else Path(root).name
    info_path = storage.join(root, "meta", "info.json")
    if not storage.exists(info_path):
        raise ValueError(f"{root}: not a LeRobot dataset (missing meta/info.json)")
    info = json.loads(storage.read_text(info_path))
    version = str(info.get("codebase_version", ""))
    if not version.startswith(("v2", "v3")):
        raise ValueError(f"{root}: LeRobot codebase_version {version!r} is not supported (need v2.0, v2.1 or v3.x)")
    fps = float(info["fps"])
    features = info.get("features", {})
    video_keys = sorted(k for k, v in features.items() if v.get("dtype") == "video")
    if not video_keys:
        raise ValueError(f"{root}: LeRobot dataset has no video features")
    robot = robot or info.get("robot_type") or name
    if version.startswith("v2"):
        return _read_lerobot_v2(root, name, info, video_keys, robot, action_key, proprio_key)
    tasks: dict[int, str] = {}
    tasks_path = storage.join(root, "meta", "tasks.parquet")
    if storage.exists(tasks_path):
        table = _read_parquet(tasks_path).to_pandas()
        col = "task" if "task" in table.columns else None
        for idx, row in table.iterrows():
            tasks[int(row["task_index"])] = str(row[col] if col else idx)
    episodes, errors = [], []
    ep_files = [f for f in storage.find_files(storage.join(root, "meta", "episodes")) if f.endswith(".parquet")]
    for ep_file in ep_files:
        for rec in _read_parquet(ep_file).to_pylist():
            idx = int(rec["episode_index"])
            data_file = storage.join(root, info["data_path"].format(
                chunk_index=rec["data/chunk_index"], file_index=rec["data/file_index"]))
            lo, hi = int(rec["dataset_from_index"]), int(rec["dataset_to_index"])
            videos, segments = {}, {}
            for key in video_keys:
                cam = sanitize_key(key.split(".")[-1])
                videos[cam] = storage.join(root, info["video_path"].format(
                    video_key=key, chunk_index=rec[f"videos/{key}/chunk_index"],
                    file_index=rec[f"videos/{key}/file_index"]))
                segments[cam] = (float(rec[f"videos/{key}/from_timestamp"]),
                                 float(rec[f"videos/{key}/to_timestamp"]))
            task = rec.get("tasks")
            instruction = task[0] if isinstance(task, list) and task else (task or None)
            episodes.append(Episode(
                episode_id=f"{sanitize_key(name)}_{idx:06d}", videos=videos, robot=robot, fps=fps,
                actions=f"parquet:{data_file}:{lo}:{hi}:{action_key}" if action_key in features else None,
                proprio=f"parquet:{data_file}:{lo}:{hi}:{proprio_key}" if proprio_key in features else None,
                instruction=instruction, segments=segments, source=f"{root}#episode={idx}",
            ))
    return episodes, errors


def _jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]


def _read_lerobot_v2(root: str, name: str, info: dict, video_keys: list[str], robot: str, action_key: str,
                     proprio_key: str) -> tuple[list[Episode], list[dict]]:
    """LeRobot v2.0 / v2.1: one parquet per episode (its rows: the frames, with their global
    ``index``), one mp4 per episode and camera. Each episode is checked before it is listed: its
    parquet's rows against episodes.jsonl's length, its timestamps against frame_index / fps,
    its task indices against tasks.jsonl; a mismatch skips the episode with the reason."""
    fps, features = float(info["fps"]), info.get("features", {})
    chunk = int(info.get("chunks_size", 1000))
    for need in ("episodes.jsonl", "tasks.jsonl"):
        if not storage.exists(storage.join(root, "meta", need)):
            raise ValueError(f"{root}: LeRobot {info['codebase_version']} dataset without meta/{need}")
    tasks = {int(t["task_index"]): str(t["task"]) for t in _jsonl(storage.join(root, "meta", "tasks.jsonl"))}
    episodes, errors = [], []
    for rec in sorted(_jsonl(storage.join(root, "meta", "episodes.jsonl")), key=lambda r: int(r["episode_index"])):
        idx = int(rec["episode_index"])
        where = f"{root}#episode={idx}"
        fmt = {"episode_chunk": idx // chunk, "episode_index": idx}
        data_file = storage.join(root, info["data_path"].format(**fmt))
        try:
            table = _read_parquet(data_file, columns=[c for c in ("index", "frame_index", "timestamp", "task_index")
                                                      if c in features or c in ("index", "frame_index", "timestamp")])
        except Exception as err:  # a missing or unreadable parquet
            errors.append({"input": where, "reason": f"{data_file}: unreadable parquet ({type(err).__name__}: {err})"})
            continue
        cols = table.to_pydict()
        rows, length = table.num_rows, int(rec.get("length", -1))
        reason = None
        if rows != length:
            reason = f"{data_file} has {rows} rows, meta/episodes.jsonl says length {length}"
        elif rows == 0:
            reason = f"{data_file} has no rows"
        else:
            frame_index = np.asarray(cols["frame_index"], np.float64)
            late = np.abs(np.asarray(cols["timestamp"], np.float64) - frame_index / fps)
            if not np.array_equal(frame_index, np.arange(rows)):
                reason = f"{data_file}: frame_index is not 0..{rows - 1}"
            elif late.max() > 0.5 / fps:
                k = int(late.argmax())
                reason = (f"{data_file}: timestamp {cols['timestamp'][k]:.4f} s at frame {k} is not frame / fps "
                          f"({k / fps:.4f} s at {fps:g} fps)")
            elif "task_index" in cols and set(cols["task_index"]) - set(tasks):
                reason = f"{data_file}: task_index {sorted(set(cols['task_index']) - set(tasks))} not in meta/tasks.jsonl"
        if reason:
            errors.append({"input": where, "reason": reason})
            continue
        lo, hi = int(min(cols["index"])), int(max(cols["index"])) + 1
        videos = {sanitize_key(k.split(".")[-1]): storage.join(root, info["video_path"].format(video_key=k, **fmt))
                  for k in video_keys}
        named = rec.get("tasks") or []
        if "task_index" in cols:
            named = named or [tasks[int(cols["task_index"][0])]]
        episodes.append(Episode(
            episode_id=f"{sanitize_key(name)}_{idx:06d}", videos=videos, robot=robot, fps=fps,
            actions=f"parquet:{data_file}:{lo}:{hi}:{action_key}" if action_key in features else None,
            proprio=f"parquet:{data_file}:{lo}:{hi}:{proprio_key}" if proprio_key in features else None,
            instruction=named[0] if named else None, source=where))
    return episodes, errors


def load_array(ref: str) -> np.ndarray:
    """Load a per-frame array: a .npy path or a ``parquet:file:from:to:column`` reference.

    Raises ValueError naming the file and problem (missing, wrong shape, NaN/inf).
    """
    if ref.startswith(("zarr:", "hdf5:", "rlds:")):  # an array of a replay buffer / HDF5 file / RLDS record
        from preprocessing.arrays import load_array_ref

        arr, name = load_array_ref(ref), ref
    elif ref.startswith("parquet:"):
        import pyarrow.compute as pc

        file, lo, hi, column = ref[len("parquet:"):].rsplit(":", 3)
        table = _read_parquet(file, columns=["index", column])
        mask = pc.and_(pc.greater_equal(table["index"], int(lo)), pc.less(table["index"], int(hi)))
        table = table.filter(mask).sort_by("index")
        arr = np.asarray(table[column].to_pylist(), dtype=np.float32)
        name = f"{file} column '{column}'"
    else:
        if not storage.exists(ref):
            raise ValueError(f"{ref}: array file does not exist")
        try:
            arr = np.load(io.BytesIO(storage.read_bytes(ref)), allow_pickle=False)
        except Exception as err:
            raise ValueError(f"{ref}: not a readable .npy array ({err})") from err
        name = ref
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name}: expected a (T, D) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ValueError(f"{name}: contains NaN or inf in {bad} row(s)")
    return arr
