"""Training data: latent shard sets -> windows of (history, future, actions), mixed by weight.

Each source is one shard set written by encode_latents.py. Its pipeline, in order:

    shard list -> shuffle shards (seed, epoch) -> split by node -> split by worker
    -> read episodes -> pool of episodes (windows drawn across them, each once per pass)
    -> shuffle buffer of windows

and sources are mixed by sampling weight (robot data beside action-free human video) before
batching. A shard set whose VAE identity differs from the configured one is refused; actions
are normalized with the set's stored per-robot statistics (proprioception too, when
data.proprio_dim > 0: its state at each history frame, zeros for episodes without); a corrupt
sample is skipped and counted, never fatal. With fewer shards than ranks x workers, shards are repeated so that no
worker starves (and no rank hangs waiting for another).
"""

from __future__ import annotations

import random
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np
import torch

from pipeline.robots import normalize_actions
from pipeline.windows import WindowConfig, cut_windows, window_at, window_starts  # noqa: F401  (one import site)
from uva_io import storage
from uva_io.shardset import decode_member, load_index, read_stats


@dataclass
class SourceConfig:
    """One latent shard set and its share of the training mix."""

    path: str  # folder with index.json and the tars
    weight: float = 1.0  # sampling weight in the mix
    camera: str | None = None  # one view: the camera to train on (default: the first stored)
    # several views (data.num_views > 1): the stored camera of each view, in view order; a name the
    # episode lacks, or a view past the list, is an absent view (masked). Default: the episode's
    # cameras sorted, the first num_views of them
    cameras: list[str] | None = None

    def validate(self) -> None:
        if self.weight <= 0:
            raise ValueError(f"data.sources weight for '{self.path}' must be positive, got {self.weight}")


@dataclass
class DataConfig:
    """Where training data comes from and how it is cut and mixed."""

    sources: list[SourceConfig] = field(default_factory=list)
    window: WindowConfig = field(default_factory=WindowConfig)
    vae_identity: str | None = None  # required VAE hash; None = all sources must agree
    # actions are zero-padded to this width (padding is masked: no input, no loss); 0: the widest
    # robot of the sources (training resolves it); a width narrower than a robot is an error
    action_dim: int = 0
    num_views: int = 1  # cameras per time step (the model's num_views); fewer in an episode are masked
    proprio_dim: int = 0  # proprioception per history frame, zero-padded to this width (0 = not loaded)
    normalization: str = "mean_std"  # mean_std or q01_q99 (to [-1, 1])
    norm_mask: list[bool] | None = None  # per action dimension, False = not normalized (None = all)
    shuffle_episodes: int = 16  # episodes per source whose windows are interleaved (held in memory)
    shuffle_buffer: int = 256  # windows held for shuffling per source, after the episode pool
    num_workers: int = 1  # DataLoader workers per rank
    seed: int = 0
    # training windows shifted by up to this many latent cells in x and y, one shift for every
    # frame and view of a window (clip-consistent), edge cells repeated: the latent counterpart
    # of a random crop (one cell = the VAE's downsampling factor in pixels); 0 = none
    augment_shift: int = 0
    # relative chunks, per robot name: {"origin": per action dimension the proprioception index it
    # is measured from (-1: absolute), "stats": statistics of the relative chunk targets}; the
    # chunk of such a robot is its actions minus its state at the last history frame, normalized
    # with those statistics (set by fine-tuning from the robot's relative_to; empty: absolute)
    relative_actions: dict[str, dict] = field(default_factory=dict)
    # robot names with an embodiment vector, id = position (set by training from the model; empty:
    # every sample gets id 0 and the model has no embodiment table)
    embodiments: list[str] = field(default_factory=list)
    # instruction token vectors (set by training from the model): their size (0 = not loaded),
    # tokens per instruction and the text encoder that must have made them (uva_io.text identity)
    lang_dim: int = 0
    lang_tokens: int = 16
    text_encoder: str | None = None

    def validate(self) -> None:
        if self.normalization not in ("mean_std", "q01_q99"):
            raise ValueError(f"data.normalization must be mean_std or q01_q99, got {self.normalization!r}")
        for src in self.sources:
            if src.cameras is not None and not 1 <= len(src.cameras) <= self.num_views:
                raise ValueError(f"data.sources '{src.path}': cameras {src.cameras} name {len(src.cameras)} views, "
                                 f"data.num_views is {self.num_views} (fewer are absent views, more do not fit)")
        if self.num_views < 1:
            raise ValueError(f"data.num_views must be >= 1, got {self.num_views}")
        if self.augment_shift < 0:
            raise ValueError(f"data.augment_shift must be >= 0, got {self.augment_shift}")
        if self.shuffle_buffer < 1 or self.shuffle_episodes < 1 or self.num_workers < 0 or self.action_dim < 0 or self.proprio_dim < 0:
            raise ValueError("data.shuffle_buffer and shuffle_episodes must be positive, num_workers, action_dim and "
                             "proprio_dim >= 0")


def action_width(cfg: DataConfig, stats: dict) -> int:
    """The action width of a mix: ``cfg.action_dim``, which must fit every robot in ``stats``, or
    (0) the widest robot's."""
    dims = {robot: int(entry["dim"]) for robot, entry in stats.items() if "dim" in entry}
    if not cfg.action_dim:
        return max(dims.values(), default=1)
    wider = {r: d for r, d in dims.items() if d > cfg.action_dim}
    if wider:
        robot, dim = max(wider.items(), key=lambda kv: kv[1])
        raise ValueError(f"data.action_dim={cfg.action_dim} is narrower than robot '{robot}' ({dim}-d actions) in the "
                         f"mix: leave it unset (the width follows the widest robot, {max(dims.values())}) or set it "
                         f">= {max(dims.values())}")
    return cfg.action_dim


def merged_stats(sources: list[SourceConfig]) -> dict:
    """Statistics per robot over the given sets; a robot keeps those of the first set it is in."""
    stats: dict = {}
    for src in sources:
        for robot, value in read_stats(src.path).items():
            stats.setdefault(robot, value)
    return stats


class ErrorCounter:
    """webdataset error handler: counts, logs the first few and then at most one line per
    ``every`` seconds, and keeps the stream going (a torn shard costs its remaining samples)."""

    def __init__(self, where: str, every: float = 30.0):
        self.where, self.every = where, every
        self.count, self.last_log = 0, -1e9

    def __call__(self, exn: Exception) -> bool:
        self.count += 1
        now = time.monotonic()
        if self.count <= 3 or now - self.last_log >= self.every:
            self.last_log = now
            print(f"[data] {self.where}: skipped ({self.count} so far): {type(exn).__name__}: "
                  f"{str(exn).splitlines()[0][:200] if str(exn) else ''}", flush=True)
        return True


def decode_sample(sample: dict) -> dict:
    """Raw tar members -> arrays and dicts (the shard format's decoding)."""
    return {k: (v if k.startswith("__") else decode_member(k, v)) for k, v in sample.items()}


def tar_samples(url: str, handler) -> Iterator[dict]:
    """The samples of one shard through webdataset's stages (open -> tar members -> samples);
    member names keep their case (camera names may have capitals)."""
    import webdataset as wds

    if storage.is_remote(url):
        storage.register_webdataset_schemes()
    files = wds.tariterators.tar_file_expander(wds.tariterators.url_opener([{"url": url}], handler=handler),
                                               handler=handler)
    return wds.tariterators.group_by_keys(files, lcase=False, handler=handler)


class ShardSetStream(torch.utils.data.IterableDataset):
    """Endless stream of windows from one shard set for one consumer (rank x loader worker).

    The stages, in order (each a generator over the previous one):

        shard list -> seeded shuffle per pass -> split by rank and worker
        -> tar samples via webdataset, errors counted and logged at a limited rate (``_samples``)
        -> episodes: checked, actions/proprioception normalized (``_episodes``)
        -> pool of episodes, windows drawn across it, each once per pass, then a shuffle buffer
           of windows (``_windows``)

    ``snapshot()`` is the whole position after the last window handed out: shard pass, shard,
    samples read from it, the RNG, the pool (episode keys and the window starts they have left)
    and the buffer (episode key and start of each window). ``restore`` set to a snapshot makes
    the next iteration continue from there, reading only the shards that hold those episodes:
    the cost of resuming does not grow with the step.
    """

    def __init__(self, source: SourceConfig, cfg: DataConfig, rank: int = 0, world_size: int = 1,
                 stats: dict | None = None):
        super().__init__()
        self.source, self.cfg, self.rank, self.world_size = source, cfg, rank, world_size
        self.root = storage.join(source.path)  # a folder or a URL (s3://bucket/prefix)
        index = load_index(self.root)
        if cfg.vae_identity and index["vae"] != cfg.vae_identity:
            raise ValueError(f"shard set '{source.path}' was encoded with VAE {index['vae']}, "
                             f"but training is configured for VAE {cfg.vae_identity}")
        self.vae_identity = index["vae"]
        self.shards = [storage.join(self.root, s["name"]) for s in index["shards"] if s["num_episodes"]]
        if not self.shards:
            raise ValueError(f"shard set '{source.path}' has no episodes")
        self.shard_of = {key: storage.join(self.root, rec["shard"]) for key, rec in index.get("episodes", {}).items()}
        self.embodiment_of = {name: i for i, name in enumerate(cfg.embodiments)}
        unknown = sorted(set(index.get("robots", [])) - set(self.embodiment_of)) if cfg.embodiments else []
        if unknown:
            raise ValueError(f"shard set '{source.path}' holds robot(s) {unknown}, which have no embodiment in "
                             f"this model ({cfg.embodiments}); a fine-tune adds its target robot, a pretraining "
                             f"run takes its list from its data.sources")
        te = index.get("text_encoder")
        if cfg.lang_dim and te and (te["dim"] != cfg.lang_dim or te.get("tokens") != cfg.lang_tokens
                                    or cfg.text_encoder not in (None, te["identity"])):
            raise ValueError(f"shard set '{source.path}' holds instructions embedded by {te['spec']} ({te['identity']}, "
                             f"{te.get('tokens')} tokens x {te['dim']}), this model takes {cfg.text_encoder} "
                             f"({cfg.lang_tokens} x {cfg.lang_dim}): re-encode it with the model's text_encoder "
                             f"and text_tokens")
        self.stats = stats if stats is not None else read_stats(self.root)
        if not cfg.action_dim:  # a stream on its own: the widest robot of its statistics
            self.cfg = cfg = replace(cfg, action_dim=action_width(cfg, self.stats))
        self.errors = ErrorCounter(f"shard set {source.path}")
        self.worker: tuple[int, int] | None = None  # (worker, workers), set by MixedStream on resume
        self.restore: dict | None = None
        self._state: dict | None = None
        self.num_corrupt = 0

    def _consumer(self) -> tuple[int, int]:
        if self.worker is not None:
            return self.worker
        info = torch.utils.data.get_worker_info()
        return (info.id, info.num_workers) if info else (0, 1)

    def _my_shards(self, epoch: int) -> list[str]:
        wid, nw = self._consumer()
        slots = self.world_size * nw
        shards = list(self.shards)
        random.Random(self.cfg.seed * 1_000_003 + epoch).shuffle(shards)  # same order on every rank
        while len(shards) < slots:  # fewer shards than consumers: repeat rather than starve a rank
            shards += shards[: slots - len(shards)]
        slot = self.rank * nw + wid
        return shards[slot::slots]

    def _episode(self, sample: dict) -> dict:
        """One stored episode, checked, with normalized actions/proprioception (latents stay float16)."""
        meta = sample["meta.json"]
        if self.cfg.embodiments and meta["robot"] not in self.embodiment_of:
            raise ValueError(f"robot '{meta['robot']}' has no embodiment in this model")
        latents, views = self._views(sample)
        actions = sample.get("actions.npy")
        row_of = sample.get("frame_index.npy")  # the control row of each frame (None: one row per frame)
        rows = len(latents) if row_of is None else int(meta.get("num_rows", 0))
        if row_of is not None and (len(row_of) != len(latents) or not rows or row_of.max() >= rows):
            raise ValueError(f"frame_index of {len(row_of)} frames does not fit {len(latents)} frames and "
                             f"{rows} control rows")
        dims, origin = 0, None  # the robot's own action dimensions (the rest is padding)
        if actions is not None:
            stats = self.stats.get(meta["robot"])
            if stats is None:
                raise ValueError(f"no action statistics for robot '{meta['robot']}'")
            if actions.ndim != 2 or len(actions) != rows:
                raise ValueError(f"actions of shape {actions.shape} for {rows} control rows")
            mask = self.cfg.norm_mask if self.cfg.norm_mask and len(self.cfg.norm_mask) == actions.shape[1] else None
            relative = self.cfg.relative_actions.get(meta["robot"])
            if relative is not None:  # normalized with the relative chunks' statistics, minus the origin
                stats = relative["stats"]
                origin = self._origin(sample, relative, stats, mask, rows)
            actions = normalize_actions(actions.astype(np.float32), stats, self.cfg.normalization, mask).astype(np.float32)
            if actions.shape[1] > self.cfg.action_dim:
                raise ValueError(f"robot '{meta['robot']}' has action dim {actions.shape[1]} > {self.cfg.action_dim}")
            dims = actions.shape[1]
            actions = np.pad(actions, ((0, 0), (0, self.cfg.action_dim - actions.shape[1])))
            if origin is not None:
                origin = np.pad(origin, ((0, 0), (0, self.cfg.action_dim - dims)))
        # per-episode tensors every window of it shares
        return {"latents": latents, "actions": actions, "origin": origin, "proprio": self._proprio(sample, rows),
                "row_of": row_of,
                "embodiment": torch.tensor(self.embodiment_of.get(meta["robot"], 0), dtype=torch.long),
                "action_mask": torch.arange(self.cfg.action_dim) < dims,
                "view_mask": None if views is None else torch.from_numpy(views), "lang": self._lang(sample)}

    def _origin(self, sample: dict, relative: dict, stats: dict, mask, num_frames: int) -> np.ndarray:
        """(T, A) offsets in model units that make a window's chunk relative (see window_at)."""
        from pipeline.robots import relative_offset

        raw = sample.get("proprio.npy")
        if raw is None or raw.ndim != 2 or len(raw) != num_frames:
            raise ValueError(f"relative actions need the robot's proprioception at every control row, got "
                             f"{None if raw is None else raw.shape} for {num_frames} rows")
        return relative_offset(raw, relative["origin"], stats, self.cfg.normalization, mask).astype(np.float32)

    def _lang(self, sample: dict) -> torch.Tensor | None:
        """(lang_tokens, lang_dim) token vectors of the episode's instruction; zeros (no instruction)
        without one."""
        want = (self.cfg.lang_tokens, self.cfg.lang_dim)
        if not self.cfg.lang_dim:
            return None
        raw = sample.get("lang.npy")
        if raw is None:
            return torch.zeros(want)
        if raw.shape != want:
            raise ValueError(f"lang of shape {raw.shape}, the model takes {want}")
        return torch.from_numpy(raw.astype(np.float32))

    def _views(self, sample: dict) -> tuple[np.ndarray, np.ndarray | None]:
        """(latents, view mask): (T, C, h, w) of one camera, or with data.num_views > 1 (T, V, C, h,
        w) in view order, an absent camera's frames zero and its mask entry False."""
        cams = sorted(k[len("latents."):-len(".npy")] for k in sample if k.startswith("latents."))
        if not cams:
            raise ValueError("no latents in the sample")
        if self.cfg.num_views == 1:
            cam = self.source.camera or cams[0]
            if cam not in cams:
                raise ValueError(f"camera '{cam}' not stored (cameras: {cams})")
            return sample[f"latents.{cam}.npy"], None
        names = self.source.cameras or cams[: self.cfg.num_views]
        present = np.array([n in cams for n in names] + [False] * (self.cfg.num_views - len(names)))
        if not present.any():
            raise ValueError(f"none of the cameras {names} is stored (cameras: {cams})")
        first = sample[f"latents.{names[int(np.argmax(present))]}.npy"]
        stack = np.zeros((first.shape[0], self.cfg.num_views, *first.shape[1:]), first.dtype)
        for v, ok in enumerate(present):
            if ok:
                lat = sample[f"latents.{names[v]}.npy"]
                if lat.shape != first.shape:
                    raise ValueError(f"camera '{names[v]}' latents {lat.shape} differ from {first.shape}")
                stack[:, v] = lat
        return stack, present

    def _window(self, ep: dict, start: int) -> dict:
        win = window_at(ep["latents"], ep["actions"], self.cfg.window, start, ep["proprio"], ep["origin"],
                        ep["row_of"])
        has = "actions" in win
        out = {"history": torch.from_numpy(win["history"].astype(np.float32)),
               "future": torch.from_numpy(win["future"].astype(np.float32)),
               "actions": torch.from_numpy(np.ascontiguousarray(win["actions"])) if has
               else torch.zeros(self.cfg.window.action_horizon, self.cfg.action_dim),
               "has_actions": torch.tensor(has),
               "action_mask": ep["action_mask"], "embodiment": ep["embodiment"]}
        if ep["view_mask"] is not None:
            out["view_mask"] = ep["view_mask"]
        if ep["lang"] is not None:
            out["lang"] = ep["lang"]
        if "proprio" in win:
            out["proprio"] = torch.from_numpy(np.ascontiguousarray(win["proprio"]))
        return out

    def _proprio(self, sample: dict, num_frames: int) -> np.ndarray | None:
        """(N, proprio_dim) normalized proprioception per control row; zeros for episodes without any."""
        width = self.cfg.proprio_dim
        if not width:
            return None
        raw = sample.get("proprio.npy")
        if raw is None:
            return np.zeros((num_frames, width), np.float32)
        robot = sample["meta.json"]["robot"]
        stats = self.stats.get(robot, {}).get("proprio")
        if stats is None:
            raise ValueError(f"no proprioception statistics for robot '{robot}' (re-run its encode command "
                             f"to rewrite stats.json)")
        if raw.ndim != 2 or raw.shape[0] != num_frames or raw.shape[1] > width:
            raise ValueError(f"proprio of shape {raw.shape} does not fit {num_frames} rows x at most {width}")
        out = normalize_actions(raw.astype(np.float32), stats, self.cfg.normalization).astype(np.float32)
        return np.pad(out, ((0, 0), (0, width - out.shape[1])))

    # -- stages ---------------------------------------------------------------------------------
    def _samples(self, epoch: int, first: int, skip: int) -> Iterator[dict | None]:
        """Shard list -> seeded shuffle per pass -> this rank's and worker's share -> samples of
        each shard (webdataset), from shard ``first`` of pass ``epoch`` after ``skip`` samples;
        endless, ``None`` at the end of each pass. ``pos`` = (pass, shard, samples read)."""
        while True:
            mine = self._my_shards(epoch)
            for i in range(first, len(mine)):
                for j, raw in enumerate(tar_samples(mine[i], self.errors)):
                    if j < skip:  # read before the checkpoint
                        continue
                    self.pos = [epoch, i, j + 1]
                    yield raw
                skip = 0
                self.pos = [epoch, i + 1, 0]
            yield None
            epoch, first = epoch + 1, 0
            self.pos = [epoch, 0, 0]

    def _episodes(self, samples, whole_pass: bool) -> Iterator[tuple[str, dict]]:
        """(key, episode) of every usable sample. A whole pass over this consumer's shards without
        one usable episode is an error (it would loop forever)."""
        found = False
        for raw in samples:
            if raw is None:
                if whole_pass and not found:
                    raise ValueError(f"shard set '{self.source.path}': no readable episode of this consumer has "
                                     f"the {self.cfg.window.span} frames one window spans")
                whole_pass, found = True, False
                continue
            ep = self._readable(raw)
            if ep is not None and len(window_starts(len(ep["latents"]), self.cfg.window)):
                found = True
                yield raw["__key__"], ep

    def _load(self, keys: set[str]) -> dict[str, dict]:
        """Episodes by key, reading only the shards that hold them (for a restore)."""
        out: dict[str, dict] = {}
        by_shard: dict[str, set[str]] = {}
        for key in keys:
            if key not in self.shard_of:
                raise ValueError(f"data position names episode '{key}', which shard set '{self.source.path}' "
                                 f"does not hold: the set changed since the checkpoint")
            by_shard.setdefault(self.shard_of[key], set()).add(key)
        for url, wanted in by_shard.items():
            for raw in tar_samples(url, self.errors):
                if raw["__key__"] in wanted:
                    out[raw["__key__"]] = self._episode(decode_sample(raw))
        missing = keys - set(out)
        if missing:
            raise ValueError(f"data position: episodes {sorted(missing)[:3]} could not be read back from "
                             f"'{self.source.path}'")
        return out

    def every_window(self, with_actions: bool = False) -> Iterator[dict]:
        """One pass over the whole set (every shard, not a rank's share), every window of every
        usable episode once, in shard and time order; ``with_actions``: only episodes with actions.
        Unreadable samples are counted and skipped as in the stream."""
        for url in self.shards:
            for raw in tar_samples(url, self.errors):
                ep = self._readable(raw)
                if ep is None or (with_actions and ep["actions"] is None):
                    continue
                for start in window_starts(len(ep["latents"]), self.cfg.window):
                    yield self._window(ep, start)

    def _readable(self, raw: dict) -> dict | None:
        """The episode of tar sample ``raw``, or None (counted and logged) when it is unusable."""
        try:
            return self._episode(decode_sample(raw))
        except (KeyError, ValueError, IndexError, OSError, EOFError) as err:
            self.num_corrupt += 1
            self.errors(ValueError(f"sample {raw.get('__key__')} in {raw.get('__url__')}: {err}"))
            return None

    def snapshot(self) -> dict | None:
        """The position after the last window handed out (small: keys and starts, no data);
        before the first window, the position it will start from (None: the beginning)."""
        st = self._state
        if st is None:
            return self.restore
        return {"pos": list(self.pos), "rng": st["rng"].getstate(), "corrupt": self.num_corrupt,
                **({"shift_rng": st["shift_rng"].getstate()} if st.get("shift_rng") else {}),
                "pool": [(key, list(starts)) for key, _, starts in st["pool"]],
                "buffer": [(key, start) for key, start, _ in st["buffer"]]}

    def __iter__(self) -> Iterator[dict]:
        """Windows drawn from a pool of ``shuffle_episodes`` episodes (each window once per pass,
        in random order), then through a ``shuffle_buffer`` of windows."""
        self._state = None
        return self._iterate()

    def _iterate(self) -> Iterator[dict]:
        wid, _ = self._consumer()
        # zlib, not hash(): str hashes change per process, and the stream must replay exactly
        rng = random.Random(zlib.crc32(f"{self.cfg.seed}/{self.rank}/{wid}/{self.root}".encode()))
        # the shifts of augment_shift: a generator of their own, so the windows and their order are
        # those of the stream without augmentation
        k = self.cfg.augment_shift
        shift_rng = random.Random(zlib.crc32(f"{self.cfg.seed}/{self.rank}/{wid}/{self.root}/shift".encode())) if k else None
        pool: list[tuple[str, dict, list[int]]] = []
        buffer: list[tuple[str, int, dict]] = []
        saved, self.restore = self.restore, None
        epoch, shard, skip = 0, 0, 0
        if saved is not None:
            epoch, shard, skip = saved["pos"]
            rng.setstate(_as_rng_state(saved["rng"]))
            if shift_rng is not None and "shift_rng" in saved:
                shift_rng.setstate(_as_rng_state(saved["shift_rng"]))
            self.num_corrupt = saved["corrupt"]
            eps = self._load({k for k, _ in saved["pool"]} | {k for k, _ in saved["buffer"]})
            pool = [(k, eps[k], list(starts)) for k, starts in saved["pool"]]
            buffer = [(k, start, self._window(eps[k], start)) for k, start in saved["buffer"]]
        self.pos = [epoch, shard, skip]
        self._state = {"rng": rng, "pool": pool, "buffer": buffer, "shift_rng": shift_rng}
        episodes = self._episodes(self._samples(epoch, shard, skip), whole_pass=shard == 0 and skip == 0)
        while True:
            while len(pool) < self.cfg.shuffle_episodes:
                key, ep = next(episodes)
                starts = list(window_starts(len(ep["latents"]), self.cfg.window))
                rng.shuffle(starts)
                pool.append((key, ep, starts))
            i = rng.randrange(len(pool))
            key, ep, starts = pool[i]
            start = starts.pop()
            item = (key, start, self._window(ep, start))
            if not starts:  # episode used up: its slot goes to the next one
                pool[i] = pool[-1]
                pool.pop()
            if len(buffer) < self.cfg.shuffle_buffer:
                buffer.append(item)
                continue
            j = rng.randrange(len(buffer))
            buffer[j], item = item, buffer[j]
            if shift_rng is None:
                yield item[2]
            else:  # its generator is saved with the position: a resumed stream shifts the same way
                yield shift_window(item[2], shift_rng.randint(-k, k), shift_rng.randint(-k, k))


def shift_window(sample: dict, dy: int, dx: int) -> dict:
    """The window's latents (history and future, every view) moved by (dy, dx) cells, the edge
    cells repeated into the space left behind; the rest of the window as it was."""
    if not dy and not dx:
        return sample
    out = dict(sample)
    for key in ("history", "future"):
        x = sample[key]
        s = x.shape[-1]
        k = max(abs(dy), abs(dx))
        flat = torch.nn.functional.pad(x.reshape(-1, *x.shape[-3:]), (k, k, k, k), mode="replicate")
        # content moves by (dy, dx): the new cell (i, j) holds the old (i - dy, j - dx)
        out[key] = flat[..., k - dy : k - dy + s, k - dx : k - dx + s].reshape(x.shape).contiguous()
    return out


def _as_rng_state(state) -> tuple:
    """random.Random state back from a checkpoint (lists after a round trip through JSON/pickle)."""
    version, internal, gauss = state
    return version, tuple(internal), gauss


class MixedStream(torch.utils.data.IterableDataset):
    """Weighted mixture of shard-set streams (seeded, per rank and worker).

    Every ``batch_size``-th window carries ``__state__``: this worker's data position after it
    (the mixing RNG and each stream's ``snapshot``), so the batch it ends records where its
    worker stands. ``resume`` = {"consumed": batches this rank consumed, "workers": {worker:
    state}} restarts every worker there; loader workers are rotated so that the next batch
    comes from the worker that would have produced it.
    """

    def __init__(self, cfg: DataConfig, rank: int = 0, world_size: int = 1, stats: dict | None = None,
                 batch_size: int = 1, resume: dict | None = None):
        super().__init__()
        if not cfg.sources:
            raise ValueError("data.sources is empty: give at least one latent shard set")
        # one normalization per robot across all sets (held-out sets pass the training statistics)
        self.stats = stats if stats is not None else merged_stats(cfg.sources)
        self.cfg = cfg = replace(cfg, action_dim=action_width(cfg, self.stats))
        self.streams = [ShardSetStream(s, cfg, rank, world_size, self.stats) for s in cfg.sources]
        ids = {s.vae_identity for s in self.streams}
        if len(ids) > 1:
            raise ValueError(f"data.sources were encoded with different VAEs: {sorted(ids)}")
        self.vae_identity = ids.pop()
        self.rank, self.batch_size = rank, max(1, batch_size)
        self.resume = resume
        w = np.asarray([s.weight for s in cfg.sources], dtype=np.float64)
        self.probs = w / w.sum()

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        workers = info.num_workers if info else 1
        worker = ((info.id if info else 0) + (self.resume or {}).get("consumed", 0)) % workers
        for s in self.streams:
            s.worker = (worker, workers)
        rng = np.random.default_rng([self.cfg.seed, self.rank, worker])
        saved = ((self.resume or {}).get("workers") or {}).get(worker)
        if saved is not None:
            rng.bit_generator.state = saved["mix"]
            for s, st in zip(self.streams, saved["streams"]):
                s.restore = st
        iters = [iter(s) for s in self.streams]
        n = 0
        while True:
            win = next(iters[rng.choice(len(iters), p=self.probs)])
            n += 1
            if n % self.batch_size == 0:
                win = {**win, "__state__": {"worker": worker, "mix": rng.bit_generator.state,
                                            "streams": [s.snapshot() for s in self.streams]}}
            yield win


def collate(samples: list[dict]) -> dict:
    """default_collate, with the data position of the batch's last window set aside."""
    state = None
    for s in samples:
        state = s.pop("__state__", state)
    batch = torch.utils.data.default_collate(samples)
    if state is not None:
        batch["__state__"] = state
    return batch


def batch_to_device(batch: dict, device) -> dict:
    """A loader batch on ``device``, dtypes kept: latents, actions and proprioception stay float32
    (the model casts its inputs to its compute dtype; diffusion targets stay float32)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def make_loader(cfg: DataConfig, batch_size: int, rank: int = 0, world_size: int = 1,
                stats: dict | None = None, resume: dict | None = None) -> torch.utils.data.DataLoader:
    """Batches of {'history', 'future', 'actions', 'has_actions'[, 'proprio'], '__state__'} for
    one rank; ``resume`` is a ``DataPosition.state()`` from a checkpoint of the same layout."""
    if resume is not None and resume.get("num_workers") != cfg.num_workers:
        raise ValueError(f"data.num_workers is {cfg.num_workers}, but the checkpoint's data position was saved "
                         f"with {resume.get('num_workers')} loader workers per rank: resume with "
                         f"data.num_workers={resume.get('num_workers')}")
    return torch.utils.data.DataLoader(MixedStream(cfg, rank, world_size, stats, batch_size, resume),
                                       batch_size=batch_size, collate_fn=collate,
                                       num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
                                       prefetch_factor=4 if cfg.num_workers > 0 else None,
                                       worker_init_fn=_leave_preemption_to_the_trainer if cfg.num_workers else None)


@contextmanager
def batches(loader: torch.utils.data.DataLoader) -> Iterator[Iterator[dict]]:
    """Iterate ``loader`` and stop its workers on the way out, an error's way included: they
    ignore SIGTERM (below), so workers left to the interpreter's exit hang it in a final join, and
    a traceback through ``next`` would keep the iterator (and them) alive."""
    it = iter(loader)
    try:
        yield it
    finally:
        stop_workers = getattr(it, "_shutdown_workers", None)  # torch's multi-worker iterator
        if stop_workers is not None:
            stop_workers()


def _leave_preemption_to_the_trainer(worker_id: int) -> None:
    """Loader workers ignore the preemption signals: Slurm (and ``timeout``, ``kill -- -PGID``)
    signal every process of the job, and a worker that died of it would take the trainer down
    before its preemption checkpoint. The trainer checkpoints, exits, and its loader stops them."""
    import signal

    from pipeline.components.distributed import PREEMPT_SIGNALS

    for sig in PREEMPT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class DataPosition:
    """Where a rank's loader stands: the state carried by the last batch consumed from each
    worker, and how many batches were consumed. Saved with every checkpoint (per rank)."""

    def __init__(self, num_workers: int, saved: dict | None = None):
        self.num_workers = num_workers
        self.consumed = saved["consumed"] if saved else 0
        self.workers = dict(saved["workers"]) if saved else {}

    def take(self, batch: dict) -> dict:
        """Record ``batch``'s position; returns the batch without it."""
        state = batch.pop("__state__", None)
        if state is not None:
            self.workers[state["worker"]] = state
        self.consumed += 1
        return batch

    def state(self) -> dict:
        return {"consumed": self.consumed, "num_workers": self.num_workers, "workers": dict(self.workers)}
