"""Open X-Embodiment datasets in RLDS, read without TensorFlow.

A dataset version folder (local or object storage), as TFDS writes it:

    <name>/<version>/dataset_info.json    splits, their shard counts and file name template
    <name>/<version>/features.json        the feature tree: images (shape, JPEG/PNG), tensors (shape, dtype)
    <name>/<version>/<name>-<split>.tfrecord-NNNNN-of-NNNNN

Each record is one episode, a ``tf.train.Example`` with flat keys: ``steps/observation/<camera>``
(one encoded frame per step), ``steps/action`` (or ``steps/action/<part>``), ``steps/observation/
<state>``, ``steps/language_instruction``, ``steps/is_first``..., ``episode_metadata/<key>``.
uva_io.tfrecord checks every record's framing and CRCs and parses the messages.

Which features are cameras, state and action, and the control rate, come from configs/oxe.yaml
for the OXE datasets, else from the flags (``--rlds-cameras``, ``--proprio-keys``,
``--source-fps``); a layout that cannot be resolved is an error listing the features found.

An episode's camera, action and state are array references the encode workers open
(preprocessing/arrays.py): ``rlds:<file>#<offset>::<feature>``. A worker reads the one record
(its frames stay encoded in memory) and decodes frames chunk by chunk, so memory is bounded per
episode as for video. Listing reads each record once for its instruction and metadata (a
thread per file); the workers read it again to encode it.
"""

from __future__ import annotations

import functools
import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from preprocessing.sources import Episode, sanitize_key
from uva_io import storage
from uva_io.tfrecord import RecordError, parse_example, read_at, scan
from uva_io.video import DecodeError

IMAGE_CLASS, TEXT_CLASS = "image_feature.Image", "text_feature.Text"


@dataclass
class Feature:
    kind: str  # image | tensor | text
    shape: tuple[int, ...] = ()
    dtype: str = ""
    encoding: str = ""  # jpeg | png for images


def read_features(tree: dict, prefix: str = "") -> dict[str, Feature]:
    """features.json -> {flat key: Feature}, keys as the records hold them (steps/observation/image)."""
    out: dict[str, Feature] = {}
    cls = tree.get("pythonClassName", "")
    if "featuresDict" in tree:
        for name, child in tree["featuresDict"]["features"].items():
            out.update(read_features(child, f"{prefix}{name}/"))
    elif "sequence" in tree:  # a Dataset (the steps) or a Sequence: its feature, per step
        out.update(read_features(tree["sequence"]["feature"], prefix))
    elif "image" in tree or cls.endswith(IMAGE_CLASS):
        spec = tree.get("image", {})
        dims = tuple(int(d) if int(d) >= 0 else -1 for d in spec.get("shape", {}).get("dimensions", []))
        out[prefix.rstrip("/")] = Feature("image", dims, spec.get("dtype", "uint8"), spec.get("encodingFormat", ""))
    elif "tensor" in tree:
        spec = tree["tensor"]
        dims = tuple(int(d) for d in spec.get("shape", {}).get("dimensions", []))
        out[prefix.rstrip("/")] = Feature("tensor", dims, spec.get("dtype", ""), spec.get("encoding", "none"))
    elif "text" in tree or cls.endswith(TEXT_CLASS):
        out[prefix.rstrip("/")] = Feature("text")
    return out


@functools.lru_cache(maxsize=1)
def oxe_table() -> dict:
    """configs/oxe.yaml's datasets."""
    import yaml

    from uva_io.assets import find_config

    return yaml.safe_load(find_config("oxe.yaml").read_text())["datasets"]


@dataclass
class Layout:
    """Which features of a dataset an episode is made of."""

    cameras: dict[str, str]  # our camera name -> feature key
    action: list[str]  # feature keys, concatenated
    proprio: list[str]
    fps: float
    action_space: str = "unspecified"


def resolve_layout(name: str, features: dict[str, Feature], source_fps: float | None = None,
                   cameras: dict[str, str] | None = None, proprio_keys: list[str] | None = None,
                   where: str = "") -> Layout:
    """The layout of dataset ``name``: flags first, then configs/oxe.yaml, then what the features
    say (every image under steps/observation, steps/action, observation/state)."""
    entry = oxe_table().get(name, {})
    images = {k[len("steps/observation/"):]: k for k, f in features.items()
              if f.kind == "image" and k.startswith("steps/observation/")}
    tensors = {k for k, f in features.items() if f.kind == "tensor"}
    found = ", ".join(f"{k} ({f.kind}{list(f.shape) if f.shape else ''})" for k, f in sorted(features.items()))
    if cameras:
        missing = [f for f in cameras.values() if f not in images]
        if missing:
            raise ValueError(f"{where}: --rlds-cameras names {missing}, which are not image features (found: {found})")
        cams = {c: images[f] for c, f in cameras.items()}
    elif entry.get("cameras"):
        cams = {c: images[f] for c, f in entry["cameras"].items() if f in images}
        if not cams:
            raise ValueError(f"{where}: configs/oxe.yaml names cameras {entry['cameras']} for {name}, none of "
                             f"which is an image feature here (found: {found})")
    else:
        cams = {sanitize_key(c): k for c, k in images.items()}
    if not cams:
        raise ValueError(f"{where}: no image feature under steps/observation (found: {found})")
    if entry.get("action_keys"):
        action = [f"steps/action/{k}" for k in entry["action_keys"]]
    elif "steps/action" in tensors:
        action = ["steps/action"]
    else:
        parts = sorted(k for k in tensors if k.startswith("steps/action/"))
        raise ValueError(f"{where}: the action is not one tensor (steps/action); its parts {parts} need an "
                         f"action_keys entry for {name} in configs/oxe.yaml (found: {found})")
    missing = [k for k in action if k not in tensors]
    if missing:
        raise ValueError(f"{where}: no action feature {missing} (found: {found})")
    if proprio_keys is not None:
        proprio = [f"steps/observation/{k}" for k in proprio_keys]
        bad = [k for k in proprio if k not in tensors]
        if bad:
            raise ValueError(f"{where}: --proprio-keys names {bad}, which are not tensors (found: {found})")
    else:
        proprio = [f"steps/observation/{k}" for k in entry.get("state_keys", [])
                   if f"steps/observation/{k}" in tensors]
        if not proprio and "steps/observation/state" in tensors:
            proprio = ["steps/observation/state"]
    fps = source_fps or entry.get("control_hz")
    if not fps:
        raise ValueError(f"{where}: RLDS stores no frame rate and configs/oxe.yaml has none for '{name}': give "
                         f"--source-fps (the dataset's control rate)")
    return Layout(cams, action, proprio, float(fps), entry.get("action_space", "unspecified"))


def split_files(root: str, info: dict, splits: list[str] | None) -> dict[str, list[str]]:
    """{split: its tfrecord files in shard order}."""
    name = info["name"]
    have = {s["name"]: s for s in info.get("splits", [])}
    wanted = splits or list(have)
    unknown = [s for s in wanted if s not in have]
    if unknown:
        raise ValueError(f"{root}: no split {unknown} (splits: {sorted(have)})")
    fmt = info.get("fileFormat", "tfrecord")
    if fmt != "tfrecord":
        raise ValueError(f"{root}: file format {fmt!r}; only tfrecord is read")
    out = {}
    for split in wanted:
        s = have[split]
        n = len(s.get("shardLengths", [])) or 1
        template = s.get("filepathTemplate", "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
        out[split] = [storage.join(root, template.replace("{DATASET}", name).replace("{SPLIT}", split)
                                   .replace("{FILEFORMAT}", fmt).replace("{SHARD_X_OF_Y}", f"{i:05d}-of-{n:05d}"))
                      for i in range(n)]
    return out


# where RLDS datasets keep the instruction (the OXE ones differ), first found wins
INSTRUCTION_KEYS = ("steps/language_instruction", "steps/observation/natural_language_instruction",
                    "steps/observation/language_instruction", "episode_metadata/language_instruction")


def _instruction(ex: dict) -> str | None:
    for key in INSTRUCTION_KEYS:
        value = ex.get(key)
        if isinstance(value, list) and value and isinstance(value[0], bytes):
            return value[0].decode("utf-8", "replace").strip() or None
    return None


def _metadata(ex: dict) -> dict:
    meta = {}
    for k, v in ex.items():
        if k.startswith("episode_metadata/"):
            key = k[len("episode_metadata/"):]
            if isinstance(v, list):
                meta[key] = [b.decode("utf-8", "replace") for b in v] if len(v) != 1 else v[0].decode("utf-8", "replace")
            else:
                meta[key] = v.tolist() if len(v) != 1 else v.item()
    return meta


def _list_file(path: str, split: str, name: str, layout: Layout, robot: str) -> tuple[list[Episode], list[dict]]:
    episodes, errors = [], []
    shard = path.rsplit("/", 1)[-1]
    try:
        with storage.open_read(path) if storage.is_remote(path) else open(path, "rb") as f:
            try:
                records = scan(f, path)
            except RecordError as err:  # a torn file: the records before the tear are read
                records = getattr(err, "records", [])
                errors.append({"input": path, "reason": str(err)})
            for k, (offset, _) in enumerate(records):
                where = f"{path}#{offset}"
                try:
                    ex = parse_example(read_at(f, offset, path))
                except RecordError as err:
                    errors.append({"input": where, "reason": f"record {k}: {err}"})
                    continue
                ref = lambda keys: "rlds:" + where + "::" + "+".join(keys)  # noqa: E731
                episodes.append(Episode(
                    episode_id=f"{sanitize_key(name)}_{sanitize_key(split)}_{sanitize_key(shard.rsplit('-', 3)[-3])}"
                               f"_{k:06d}",
                    videos={cam: ref([key]) for cam, key in layout.cameras.items()}, robot=robot, fps=layout.fps,
                    actions=ref(layout.action), proprio=ref(layout.proprio) if layout.proprio else None,
                    instruction=_instruction(ex), source=where,
                    metadata={"split": split, **_metadata(ex)}))
    except FileNotFoundError:
        errors.append({"input": path, "reason": "shard file listed in dataset_info.json does not exist"})
    except OSError as err:
        errors.append({"input": path, "reason": f"unreadable: {err}"})
    return episodes, errors


def read_rlds(root: str, robot: str | None = None, source_fps: float | None = None, splits: list[str] | None = None,
              cameras: dict[str, str] | None = None, proprio_keys: list[str] | None = None,
              threads: int = 8) -> tuple[list[Episode], list[dict]]:
    """The episodes of an RLDS dataset version folder, every split (or ``splits``), in shard and
    record order; ``(episodes, errors)`` like the other readers."""
    root = str(root).rstrip("/")
    for required in ("dataset_info.json", "features.json"):
        if not storage.exists(storage.join(root, required)):
            raise ValueError(f"--rlds {root}: no {required} (give a dataset version folder, <name>/<version>/)")
    info = json.loads(storage.read_text(storage.join(root, "dataset_info.json")))
    features = read_features(json.loads(storage.read_text(storage.join(root, "features.json"))))
    name = info.get("name") or root.rsplit("/", 2)[-2]
    layout = resolve_layout(name, features, source_fps, cameras, proprio_keys, where=f"--rlds {root}")
    files = [(split, path) for split, paths in split_files(root, info, splits).items() for path in paths]
    with ThreadPoolExecutor(max(1, min(threads, len(files)))) as pool:
        results = list(pool.map(lambda sp: _list_file(sp[1], sp[0], name, layout, robot or name), files))
    episodes = [e for eps, _ in results for e in eps]
    errors = [e for _, errs in results for e in errs]
    return episodes, errors


# --- the workers' side: one record as arrays ---------------------------------------------------
@functools.lru_cache(maxsize=2)
def _record(file: str, offset: int) -> dict:
    with storage.open_read(file) if storage.is_remote(file) else open(file, "rb") as f:
        return parse_example(read_at(f, offset, file))


def _steps(ex: dict) -> int:
    for key in ("steps/is_first", "steps/is_last"):
        if key in ex:
            return len(ex[key])
    lists = [len(v) for k, v in ex.items() if k.startswith("steps/") and isinstance(v, list)]
    if lists:
        return lists[0]
    raise RecordError("cannot tell the number of steps (no steps/is_first and no per-step list)")


class FrameList:
    """The encoded frames of one camera, decoded on indexing: ``shape`` (T, H, W, 3), uint8."""

    dtype = np.dtype(np.uint8)

    def __init__(self, frames: list[bytes], where: str):
        self.frames, self.where = frames, where
        self._first = self._decode(0)  # the shape; kept, so step 0 is decoded once
        self.shape = (len(frames), *self._first.shape)

    def _decode(self, i: int) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(self.frames[i])) as im:
                x = np.asarray(im.convert("RGB"))
        except Exception as err:  # PIL raises several types for a bad image
            raise DecodeError(f"{self.where}: step {i}: undecodable frame ({type(err).__name__}: {err})") from err
        if i and x.shape != self.shape[1:]:
            raise DecodeError(f"{self.where}: step {i}: frame of shape {x.shape}, the episode's are {self.shape[1:]}")
        return x

    def __getitem__(self, rows: slice) -> np.ndarray:
        idx = range(*rows.indices(len(self.frames)))
        if not len(idx):
            return np.zeros((0, *self.shape[1:]), np.uint8)
        return np.stack([self._first if i == 0 else self._decode(i) for i in idx])


def record_arrays(file: str, offset: int, keys: list[str]) -> dict[str, object]:
    """{key: (T, ...) array or FrameList} of one episode record."""
    where = f"{file}#{offset}"
    ex = _record(file, offset)
    t = _steps(ex)
    out = {}
    for key in keys:
        if key not in ex:
            raise ValueError(f"{where}: no feature '{key}' in the record (has: {sorted(ex)[:12]}...)")
        value = ex[key]
        if isinstance(value, list):
            if len(value) != t:
                raise ValueError(f"{where}: '{key}' has {len(value)} entries for {t} steps")
            out[key] = FrameList(value, f"{where} {key}")
        else:
            if t == 0 or value.size % t:
                raise ValueError(f"{where}: '{key}' has {value.size} values, not a multiple of its {t} steps")
            out[key] = value.reshape(t, -1).astype(np.float32)
    return out
