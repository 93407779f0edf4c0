"""The robot registry: configs/robots/<name>.yaml, one file per target robot.

A robot says what its action vector means (names and units per dimension, the control space),
its control rate, cameras, proprioception, and how its actions are normalized for the model:
``mean_std`` ((a - mean) / std) or ``q01_q99`` (the 1st..99th percentile range to [-1, 1]),
with ``unnormalized`` dimensions (a gripper already in [0, 1], say) passed through in their own
units. Adding a robot is adding a file.

``relative_to`` names, for action dimensions that are positions of something the robot also
senses (a PushT target position and the agent's position, a joint target and the joint angle),
the proprioception they are measured from when a recipe trains relative chunks
(``relative_actions``): the model then predicts each chunk as offsets from the robot's state at
the last history frame, and the policy adds that state back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class RobotConfig:
    name: str
    action_names: list[str]  # one per action dimension, in order
    action_space: str = "unspecified"  # joint_position | ee_pose | ee_delta | target_position | ...
    action_units: list[str] = field(default_factory=list)
    control_hz: float = 10.0
    cameras: list[str] = field(default_factory=lambda: ["main"])
    proprio_names: list[str] = field(default_factory=list)
    normalization: str = "mean_std"  # mean_std | q01_q99 | affine (model = robot * scale + offset, from
    # an imported model's statistics: uva-import reference)
    unnormalized: list[str] = field(default_factory=list)  # action names left in robot units
    # action name -> the proprioception name it is measured from in relative chunks
    relative_to: dict[str, str] = field(default_factory=dict)
    # bounds of each action dimension in robot units (joint limits, workspace); empty: the policy
    # bounds its output by the training data's range widened by LIMIT_MARGIN of it
    action_low: list[float] = field(default_factory=list)
    action_high: list[float] = field(default_factory=list)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    def norm_mask(self) -> list[bool]:
        """True where a dimension is normalized."""
        return [n not in self.unnormalized for n in self.action_names]

    def validate(self) -> None:
        if not self.action_names or len(set(self.action_names)) != len(self.action_names):
            raise ValueError(f"robot '{self.name}': action_names must be non-empty and unique")
        if self.action_units and len(self.action_units) != len(self.action_names):
            raise ValueError(f"robot '{self.name}': action_units has {len(self.action_units)} entries for "
                             f"{len(self.action_names)} action dimensions")
        if self.normalization not in ("mean_std", "q01_q99", "affine"):
            raise ValueError(f"robot '{self.name}': normalization must be mean_std, q01_q99 or affine, "
                             f"got {self.normalization!r}")
        unknown = sorted(set(self.unnormalized) - set(self.action_names))
        if unknown:
            raise ValueError(f"robot '{self.name}': unnormalized names {unknown} are not action names")
        if bool(self.action_low) != bool(self.action_high) or any(
                len(x) not in (0, self.action_dim) for x in (self.action_low, self.action_high)):
            raise ValueError(f"robot '{self.name}': action_low and action_high need one value per action dimension "
                             f"({self.action_dim}), both or neither")
        if any(lo > hi for lo, hi in zip(self.action_low, self.action_high)):
            raise ValueError(f"robot '{self.name}': action_low is above action_high")
        if self.control_hz <= 0:
            raise ValueError(f"robot '{self.name}': control_hz must be positive")
        bad = sorted(set(self.relative_to) - set(self.action_names))
        if bad:
            raise ValueError(f"robot '{self.name}': relative_to names {bad}, which are not action names")
        bad = sorted(set(self.relative_to.values()) - set(self.proprio_names))
        if bad:
            raise ValueError(f"robot '{self.name}': relative_to refers to {bad}, which are not proprio_names")

    def relative_origin(self) -> list[int]:
        """Per action dimension, the index of the proprioception it is measured from in a relative
        chunk (-1: the dimension stays absolute)."""
        return [self.proprio_names.index(self.relative_to[n]) if n in self.relative_to else -1
                for n in self.action_names]


def robots_dir() -> Path:
    """configs/robots of the installed package (the checkout's in a development install)."""
    from uva_io.assets import configs_root

    return configs_root() / "robots"


def available_robots(root: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (root or robots_dir()).glob("*.yaml"))


def load_robot(name_or_path: str, root: Path | None = None) -> RobotConfig:
    """A registered robot by name, or a robot YAML by path."""
    from uva_io.config import load_config

    root = root or robots_dir()
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = root / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown robot '{name_or_path}': no {path}; registered robots: "
                         f"{', '.join(available_robots(root))} (add one as configs/robots/<name>.yaml)")
    robot = load_config(RobotConfig, path)
    return robot


LIMIT_MARGIN = 0.1  # the data's range widened by this share of it on each side, where the robot sets no limits


def action_limits(robot: RobotConfig, stats: dict) -> dict | None:
    """{"low", "high", "from"} bounds of a policy's actions in robot units: the robot's own, else
    the data's min / max widened by LIMIT_MARGIN of the range (None when the statistics have no
    range)."""
    if robot.action_low:
        return {"low": list(map(float, robot.action_low)), "high": list(map(float, robot.action_high)),
                "from": f"robot '{robot.name}'"}
    if "min" not in stats or "max" not in stats:
        return None
    lo, hi = np.asarray(stats["min"], np.float64), np.asarray(stats["max"], np.float64)
    pad = LIMIT_MARGIN * (hi - lo)
    return {"low": (lo - pad).tolist(), "high": (hi + pad).tolist(),
            "from": f"the training data's range +- {LIMIT_MARGIN:g} of it"}


def check_stats(robot: RobotConfig, stats: dict, where: str) -> dict:
    """The robot's entry of a shard set's stats.json, checked against the robot's action layout."""
    if robot.name not in stats:
        have = {k: v.get("dim") for k, v in stats.items()}
        raise ValueError(f"{where}: no actions of robot '{robot.name}' (the shards hold {have or 'no actions'}); "
                         f"encode the target robot's episodes with robot name '{robot.name}'")
    entry = stats[robot.name]
    if int(entry["dim"]) != robot.action_dim:
        raise ValueError(f"{where}: robot '{robot.name}' actions are {entry['dim']}-d in the shards, but "
                         f"configs/robots/{robot.name}.yaml defines {robot.action_dim} "
                         f"({', '.join(robot.action_names)})")
    return entry


def check_proprio(robot: RobotConfig, entry: dict, where: str) -> dict:
    """The proprioception statistics of the robot's stats entry, checked against proprio_names."""
    if not robot.proprio_names:
        raise ValueError(f"robot '{robot.name}' lists no proprio_names in configs/robots/{robot.name}.yaml")
    stats = entry.get("proprio")
    if stats is None:
        raise ValueError(f"{where}: no proprioception statistics for robot '{robot.name}' in stats.json: "
                         f"either its episodes carry no proprio (give the manifest a 'proprio' field and "
                         f"re-encode) or the set was encoded by an older version (re-run the same "
                         f"encode_latents.py command: finished shards are kept, stats.json is rewritten); "
                         f"or fine-tune without it (use_proprio: false)")
    if int(stats["dim"]) != len(robot.proprio_names):
        raise ValueError(f"{where}: robot '{robot.name}' proprioception is {stats['dim']}-d in the shards, but "
                         f"configs/robots/{robot.name}.yaml names {len(robot.proprio_names)} "
                         f"({', '.join(robot.proprio_names)})")
    return stats


def normalize_actions(actions: np.ndarray, stats: dict, mode: str, mask=None) -> np.ndarray:
    """Robot units -> model units, per dimension; dimensions where ``mask`` is False pass through."""
    a = np.asarray(actions, dtype=np.float64)
    if mode == "mean_std":
        out = (a - np.asarray(stats["mean"])) / np.maximum(np.asarray(stats["std"]), 1e-6)
    elif mode == "q01_q99":
        lo, hi = np.asarray(stats["q01"]), np.asarray(stats["q99"])
        out = 2 * (a - lo) / np.maximum(hi - lo, 1e-6) - 1
    elif mode == "affine":
        out = a * np.asarray(stats["scale"]) + np.asarray(stats["offset"])
    else:
        raise ValueError(f"normalization must be mean_std, q01_q99 or affine, got {mode!r}")
    if mask is not None:
        out = np.where(np.asarray(mask, dtype=bool), out, a)
    return out


def unnormalize_actions(actions: np.ndarray, stats: dict, mode: str, mask=None) -> np.ndarray:
    """Model units -> robot units; the inverse of ``normalize_actions``."""
    a = np.asarray(actions, dtype=np.float64)
    if mode == "mean_std":
        out = a * np.maximum(np.asarray(stats["std"]), 1e-6) + np.asarray(stats["mean"])
    elif mode == "q01_q99":
        lo, hi = np.asarray(stats["q01"]), np.asarray(stats["q99"])
        out = (a + 1) / 2 * np.maximum(hi - lo, 1e-6) + lo
    elif mode == "affine":
        out = (a - np.asarray(stats["offset"])) / np.asarray(stats["scale"])
    else:
        raise ValueError(f"normalization must be mean_std, q01_q99 or affine, got {mode!r}")
    if mask is not None:
        out = np.where(np.asarray(mask, dtype=bool), out, a)
    return out


def chunk_origin(proprio: np.ndarray, origin: list[int]) -> np.ndarray:
    """(T, P) robot-unit states -> (T, A): per action dimension the state it is measured from
    (zero where it stays absolute)."""
    state = np.asarray(proprio, dtype=np.float64)
    out = np.zeros((len(state), len(origin)))
    for i, o in enumerate(origin):
        if o >= 0:
            out[:, i] = state[:, o]
    return out


def relative_offset(proprio: np.ndarray, origin: list[int], stats: dict, mode: str, mask=None) -> np.ndarray:
    """(T, P) robot-unit states -> (T, A) offsets in model units such that the normalized
    relative action is ``normalize(a) - offset``: the normalization is affine per dimension, so
    normalize(a - p) = normalize(a) - (normalize(p) - normalize(0))."""
    p = chunk_origin(proprio, origin)
    return normalize_actions(p, stats, mode, mask) - normalize_actions(np.zeros_like(p), stats, mode, mask)


def relative_chunk_stats(episodes, origin: list[int], offsets: list[int]) -> dict:
    """Statistics (the keys of stats.json) of relative chunk targets: a[t + k] - p[t] over every
    step t of every ``(actions (T, A), proprio (T, P))`` episode and every action offset k of a
    chunk that fits; dimensions that stay absolute get the statistics of a[t + k]."""
    from uva_io.shardset import RunningStats

    acc = RunningStats()
    for actions, proprio in episodes:
        base = chunk_origin(proprio, origin)
        for k in offsets:
            if k < len(actions):
                acc.update((np.asarray(actions[k:], np.float64) - base[: len(actions) - k]).astype(np.float32))
    if not acc.count:
        raise ValueError("relative chunk statistics: no episode is long enough for one chunk")
    return acc.result()
