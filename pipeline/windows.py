"""Windows in time: how one training sample is cut from a stored episode.

History and future frames are latent frames ``frame_stride`` apart; the action chunk is the
robot's own consecutive control rows from the last history frame (``row_of`` maps each latent
frame to its row); proprioception is the row at each history frame. The data stream
(pipeline/data.py) cuts every sample through ``window_at``; benchmarks cut whole episodes with
``cut_windows``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np


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


def window_starts(num_frames: int, w: WindowConfig) -> range:
    """First stored frame of every window of an episode with ``num_frames`` frames."""
    return range(0, num_frames - w.span + 1, w.window_stride)


def window_at(latents: np.ndarray, actions: np.ndarray | None, w: WindowConfig, start: int,
              proprio: np.ndarray | None = None, origin: np.ndarray | None = None,
              row_of: np.ndarray | None = None) -> dict:
    """The window starting at stored frame ``start``, cut in time. latents (T, C, h, w) at the
    latent rate; actions (N, A), proprio (N, P), origin (N, A) or None: rows at the robot's
    control rate, ``row_of`` (T,) the row of each latent frame (the shards' frame_index).

    History and future frames are every ``frame_stride``-th latent frame; the action chunk is the
    ``action_horizon`` consecutive control rows from the last history frame's (the chunk of a 50 Hz
    robot is 50 Hz rows, of a 5 Hz one 5 Hz rows; past the episode's end the last row repeats);
    proprioception is the row at each history frame; a relative chunk is the actions minus the
    origin at the last history frame (``pipeline.robots.relative_offset``).

    ``row_of`` None: a shard set written when actions were stored at the latent rate (one row
    per frame): the chunk spreads ``action_horizon`` rows over the future frames, as it did."""
    s = w.frame_stride
    frames = start + s * np.arange(w.num_history + w.num_future)
    last_hist = frames[w.num_history - 1]
    sample = {"history": latents[frames[: w.num_history]], "future": latents[frames[w.num_history :]]}
    if row_of is None:  # rows at the latent rate
        row_of, per_action = np.arange(len(latents)), w.num_future * s // w.action_horizon
    else:
        per_action = 1
    row = int(row_of[last_hist])
    if actions is not None:
        rows = np.minimum(row + per_action * np.arange(w.action_horizon), len(actions) - 1)
        sample["actions"] = actions[rows]
        if origin is not None:
            sample["actions"] = sample["actions"] - origin[row]
    if proprio is not None:  # the state at each history frame
        sample["proprio"] = proprio[row_of[frames[: w.num_history]]]
    return sample


def cut_windows(latents: np.ndarray, actions: np.ndarray | None, w: WindowConfig,
                proprio: np.ndarray | None = None, origin: np.ndarray | None = None,
                row_of: np.ndarray | None = None) -> Iterator[dict]:
    """All windows of one episode, in order."""
    for start in window_starts(latents.shape[0], w):
        yield window_at(latents, actions, w, start, proprio, origin, row_of)
