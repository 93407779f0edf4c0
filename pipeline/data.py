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
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pipeline.robots import normalize_actions
from uva_io.shardset import iter_tar_samples, load_index, read_stats


@dataclass
class SourceConfig:
    """One latent shard set and its share of the training mix."""

    path: str  # folder with index.json and the tars
    weight: float = 1.0  # sampling weight in the mix
    camera: str | None = None  # camera to train on (default: the first stored)

    def validate(self) -> None:
        if self.weight <= 0:
            raise ValueError(f"data.sources weight for '{self.path}' must be positive, got {self.weight}")


@dataclass
class WindowConfig:
    """Time layout of one training sample, cut from stored episodes at load time."""

    num_history: int = 4  # history frames
    num_future: int = 4  # future frames
    frame_stride: int = 4  # stored frames between consecutive model frames
    action_horizon: int = 16  # actions per sample, spread evenly over the future span
    window_stride: int = 1  # start offset between windows of one episode

    def validate(self) -> None:
        for key in ("num_history", "num_future", "frame_stride", "action_horizon", "window_stride"):
            if getattr(self, key) <= 0:
                raise ValueError(f"data.window.{key} must be positive")
        if (self.num_future * self.frame_stride) % self.action_horizon:
            raise ValueError(f"data.window: num_future * frame_stride = {self.num_future * self.frame_stride} "
                             f"must be a multiple of action_horizon = {self.action_horizon}")

    @property
    def span(self) -> int:
        """Stored frames one window covers."""
        return (self.num_history + self.num_future - 1) * self.frame_stride + 1


@dataclass
class DataConfig:
    """Where training data comes from and how it is cut and mixed."""

    sources: list[SourceConfig] = field(default_factory=list)
    window: WindowConfig = field(default_factory=WindowConfig)
    vae_identity: str | None = None  # required VAE hash; None = all sources must agree
    action_dim: int = 2  # actions are zero-padded/validated to this width
    proprio_dim: int = 0  # proprioception per history frame, zero-padded to this width (0 = not loaded)
    normalization: str = "mean_std"  # mean_std or q01_q99 (to [-1, 1])
    norm_mask: list[bool] | None = None  # per action dimension, False = not normalized (None = all)
    shuffle_episodes: int = 16  # episodes per source whose windows are interleaved (held in memory)
    shuffle_buffer: int = 256  # windows held for shuffling per source, after the episode pool
    num_workers: int = 1  # DataLoader workers per rank
    seed: int = 0

    def validate(self) -> None:
        if self.normalization not in ("mean_std", "q01_q99"):
            raise ValueError(f"data.normalization must be mean_std or q01_q99, got {self.normalization!r}")
        if self.shuffle_buffer < 1 or self.shuffle_episodes < 1 or self.num_workers < 0 or self.action_dim <= 0 or self.proprio_dim < 0:
            raise ValueError("data.shuffle_buffer, shuffle_episodes and action_dim must be positive, num_workers and "
                             "proprio_dim >= 0")


def window_starts(num_frames: int, w: WindowConfig) -> range:
    """First stored frame of every window of an episode with ``num_frames`` frames."""
    return range(0, num_frames - w.span + 1, w.window_stride)


def window_at(latents: np.ndarray, actions: np.ndarray | None, w: WindowConfig, start: int,
              proprio: np.ndarray | None = None) -> dict:
    """The window starting at stored frame ``start``. latents (T, C, h, w); actions (T, A),
    proprio (T, P) or None."""
    s = w.frame_stride
    action_step = w.num_future * s // w.action_horizon
    frames = start + s * np.arange(w.num_history + w.num_future)
    last_hist = frames[w.num_history - 1]
    sample = {"history": latents[frames[: w.num_history]], "future": latents[frames[w.num_history :]]}
    if actions is not None:
        # the actions taken from the last history frame up to the last future frame
        sample["actions"] = actions[last_hist + action_step * np.arange(w.action_horizon)]
    if proprio is not None:  # the state at each history frame
        sample["proprio"] = proprio[frames[: w.num_history]]
    return sample


def cut_windows(latents: np.ndarray, actions: np.ndarray | None, w: WindowConfig,
                proprio: np.ndarray | None = None) -> Iterator[dict]:
    """All windows of one episode, in order."""
    for start in window_starts(latents.shape[0], w):
        yield window_at(latents, actions, w, start, proprio)


def merged_stats(sources: list[SourceConfig]) -> dict:
    """Statistics per robot over the given sets; a robot keeps those of the first set it is in."""
    stats: dict = {}
    for src in sources:
        for robot, value in read_stats(src.path).items():
            stats.setdefault(robot, value)
    return stats


class ShardSetStream(torch.utils.data.IterableDataset):
    """Endless stream of windows from one shard set, split over ranks and workers."""

    def __init__(self, source: SourceConfig, cfg: DataConfig, rank: int = 0, world_size: int = 1,
                 stats: dict | None = None):
        super().__init__()
        self.source, self.cfg, self.rank, self.world_size = source, cfg, rank, world_size
        self.root = Path(source.path)
        index = load_index(self.root)
        if cfg.vae_identity and index["vae"] != cfg.vae_identity:
            raise ValueError(f"shard set '{source.path}' was encoded with VAE {index['vae']}, "
                             f"but training is configured for VAE {cfg.vae_identity}")
        self.vae_identity = index["vae"]
        self.shards = [str(self.root / s["name"]) for s in index["shards"] if s["num_episodes"]]
        if not self.shards:
            raise ValueError(f"shard set '{source.path}' has no episodes")
        self.stats = stats if stats is not None else read_stats(self.root)
        self.num_corrupt = 0

    def _my_shards(self, epoch: int) -> list[str]:
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
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
        cams = sorted(k for k in sample if k.startswith("latents."))
        cam = f"latents.{self.source.camera}.npy" if self.source.camera else cams[0]
        latents = sample[cam]
        actions = sample.get("actions.npy")
        if actions is not None:
            stats = self.stats.get(meta["robot"])
            if stats is None:
                raise ValueError(f"no action statistics for robot '{meta['robot']}'")
            if actions.ndim != 2 or len(actions) != len(latents):
                raise ValueError(f"actions of shape {actions.shape} for {len(latents)} frames")
            mask = self.cfg.norm_mask if self.cfg.norm_mask and len(self.cfg.norm_mask) == actions.shape[1] else None
            actions = normalize_actions(actions.astype(np.float32), stats, self.cfg.normalization, mask).astype(np.float32)
            if actions.shape[1] > self.cfg.action_dim:
                raise ValueError(f"robot '{meta['robot']}' has action dim {actions.shape[1]} > {self.cfg.action_dim}")
            actions = np.pad(actions, ((0, 0), (0, self.cfg.action_dim - actions.shape[1])))
        return {"latents": latents, "actions": actions, "proprio": self._proprio(sample, len(latents))}

    def _window(self, ep: dict, start: int) -> dict:
        win = window_at(ep["latents"], ep["actions"], self.cfg.window, start, ep["proprio"])
        has = "actions" in win
        out = {"history": torch.from_numpy(win["history"].astype(np.float32)),
               "future": torch.from_numpy(win["future"].astype(np.float32)),
               "actions": torch.from_numpy(np.ascontiguousarray(win["actions"])) if has
               else torch.zeros(self.cfg.window.action_horizon, self.cfg.action_dim),
               "has_actions": torch.tensor(has)}
        if "proprio" in win:
            out["proprio"] = torch.from_numpy(np.ascontiguousarray(win["proprio"]))
        return out

    def _proprio(self, sample: dict, num_frames: int) -> np.ndarray | None:
        """(T, proprio_dim) normalized proprioception; zeros for episodes without any."""
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
            raise ValueError(f"proprio of shape {raw.shape} does not fit {num_frames} frames x at most {width}")
        out = normalize_actions(raw.astype(np.float32), stats, self.cfg.normalization).astype(np.float32)
        return np.pad(out, ((0, 0), (0, width - out.shape[1])))

    def _episodes(self) -> Iterator[dict]:
        """Endless: this consumer's episodes, pass after pass (shard order reshuffled per pass)."""
        epoch = 0
        while True:
            found = False
            for shard in self._my_shards(epoch):
                try:
                    for sample in iter_tar_samples(shard):
                        try:
                            ep = self._episode(sample)
                        except (KeyError, ValueError, IndexError) as err:
                            self.num_corrupt += 1
                            print(f"[data] skipped sample {sample.get('__key__')} in {shard}: {err}", flush=True)
                            continue
                        if len(window_starts(len(ep["latents"]), self.cfg.window)):
                            found = True
                            yield ep
                except (OSError, EOFError) as err:  # torn or unreadable tar: skip the rest of it
                    self.num_corrupt += 1
                    print(f"[data] skipped unreadable shard {shard}: {err}", flush=True)
            if not found:
                raise ValueError(f"shard set '{self.source.path}': no readable episode of this consumer has "
                                 f"the {self.cfg.window.span} frames one window spans")
            epoch += 1

    def __iter__(self) -> Iterator[dict]:
        """Windows drawn from a pool of ``shuffle_episodes`` episodes (each window once per pass,
        in random order), then through a ``shuffle_buffer`` of windows."""
        info = torch.utils.data.get_worker_info()
        # zlib, not hash(): str hashes change per process, and the stream must replay exactly
        rng = random.Random(zlib.crc32(f"{self.cfg.seed}/{self.rank}/{info.id if info else 0}/{self.root}".encode()))
        episodes = self._episodes()
        pool: list[tuple[dict, list[int]]] = []
        buffer: list[dict] = []
        while True:
            while len(pool) < self.cfg.shuffle_episodes:
                ep = next(episodes)
                starts = list(window_starts(len(ep["latents"]), self.cfg.window))
                rng.shuffle(starts)
                pool.append((ep, starts))
            i = rng.randrange(len(pool))
            ep, starts = pool[i]
            win = self._window(ep, starts.pop())
            if not starts:  # episode used up: its slot goes to the next one
                pool[i] = pool[-1]
                pool.pop()
            if len(buffer) < self.cfg.shuffle_buffer:
                buffer.append(win)
                continue
            j = rng.randrange(len(buffer))
            buffer[j], win = win, buffer[j]
            yield win


class MixedStream(torch.utils.data.IterableDataset):
    """Weighted mixture of shard-set streams (seeded, per rank and worker)."""

    def __init__(self, cfg: DataConfig, rank: int = 0, world_size: int = 1, stats: dict | None = None):
        super().__init__()
        if not cfg.sources:
            raise ValueError("data.sources is empty: give at least one latent shard set")
        self.cfg = cfg
        # one normalization per robot across all sets (held-out sets pass the training statistics)
        self.stats = stats if stats is not None else merged_stats(cfg.sources)
        self.streams = [ShardSetStream(s, cfg, rank, world_size, self.stats) for s in cfg.sources]
        ids = {s.vae_identity for s in self.streams}
        if len(ids) > 1:
            raise ValueError(f"data.sources were encoded with different VAEs: {sorted(ids)}")
        self.vae_identity = ids.pop()
        self.rank = rank
        w = np.asarray([s.weight for s in cfg.sources], dtype=np.float64)
        self.probs = w / w.sum()

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.cfg.seed, self.rank, info.id if info else 0])
        iters = [iter(s) for s in self.streams]
        while True:
            yield next(iters[rng.choice(len(iters), p=self.probs)])


def batch_to_device(batch: dict, device) -> dict:
    """A loader batch on ``device``, dtypes kept: latents, actions and proprioception stay float32
    (the model casts its inputs to its compute dtype; diffusion targets stay float32)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def make_loader(cfg: DataConfig, batch_size: int, rank: int = 0, world_size: int = 1,
                stats: dict | None = None) -> torch.utils.data.DataLoader:
    """Batches of {'history', 'future', 'actions', 'has_actions'[, 'proprio']} for one rank."""
    return torch.utils.data.DataLoader(MixedStream(cfg, rank, world_size, stats), batch_size=batch_size,
                                       num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
                                       prefetch_factor=4 if cfg.num_workers > 0 else None)
