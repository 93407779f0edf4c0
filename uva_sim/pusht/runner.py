"""The PushT evaluation protocol (Diffusion Policy's), one runner for every policy.

Protocol: 50 test seeds 100000..100049; each start state comes from
``np.random.RandomState(seed)`` as the legacy test drew it; at most 300 control steps at 10 Hz;
the policy is called with its observation history and returns an action chunk, of which 8
actions are executed; reward = clip(coverage / 0.95, 0, 1); an episode's result is its max
reward; score = mean over seeds; success = coverage > 0.95 (the episode ends there).

A policy is any object with
    num_obs: int            how many recent observations it wants (older ones padded by the first)
    needs_state: bool       True only for simulator-privileged policies (the expert)
    reset(seed) -> None     called before every episode
    __call__(obs, num_actions) -> (K, 2) array of target positions in pixels, K >= 1
where obs = {"image": (num_obs, H, W, 3) uint8, "agent_pos": (num_obs, 2) float32,
"instruction": the task in words (as the demos state it), "sim_state": [SimState] (only if
needs_state)}.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from uva_io.files import atomic_write
from uva_sim.pusht.env import (
    ARENA,
    INSTRUCTION,
    SUCCESS_COVERAGE,
    get_state,
    legacy_start_state,
    make_env,
    reward_from_coverage,
)

TEST_SEEDS = tuple(range(100000, 100050))


@dataclass
class EpisodeResult:
    seed: int
    max_reward: float
    max_coverage: float
    final_coverage: float
    success: bool
    steps: int
    seconds: float
    video: str | None = None
    frames: np.ndarray | None = field(default=None, repr=False)  # (T, H, W, 3): obs before each action
    actions: np.ndarray | None = field(default=None, repr=False)  # (T, 2)
    agent_pos: np.ndarray | None = field(default=None, repr=False)  # (T, 2)

    def summary(self) -> dict:
        d = asdict(self)
        for k in ("frames", "actions", "agent_pos"):
            d.pop(k)
        return d


def score_of(max_rewards) -> float:
    """Protocol score: mean over episodes of each episode's max reward."""
    return float(np.mean(np.asarray(max_rewards, dtype=np.float64))) if len(max_rewards) else float("nan")


class RandomPolicy:
    """Uniform random target positions: the floor every trained policy must clear."""

    num_obs = 1
    needs_state = False

    def __init__(self, seed: int = 0):
        self.base_seed = seed
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng([self.base_seed, seed])

    def __call__(self, obs: dict, num_actions: int) -> np.ndarray:
        return self.rng.uniform(0.0, ARENA, size=(num_actions, 2)).astype(np.float32)


def run_episode(env, policy, seed: int, max_steps: int = 300, action_steps: int = 8,
                record: bool = False, start_state=None) -> EpisodeResult:
    """One protocol episode from the legacy start state of ``seed``."""
    t0 = time.time()
    state = legacy_start_state(seed) if start_state is None else np.asarray(start_state, dtype=np.float64)
    obs, _ = env.reset(options={"reset_to_state": state})
    policy.reset(seed)
    history: deque = deque(maxlen=max(1, int(policy.num_obs)))
    frames, actions, agent_pos = [], [], []
    coverage = float(env._get_coverage())
    max_cov, steps, success = coverage, 0, coverage > SUCCESS_COVERAGE

    def observe(o):
        item = {"image": o["pixels"], "agent_pos": np.asarray(o["agent_pos"], dtype=np.float32)}
        if policy.needs_state:
            item["sim_state"] = get_state(env)
        if not history:
            history.extend([item] * history.maxlen)
        history.append(item)
        return item

    item = observe(obs)
    while steps < max_steps and not success:
        batch = {"image": np.stack([h["image"] for h in history]),
                 "agent_pos": np.stack([h["agent_pos"] for h in history]), "instruction": INSTRUCTION}
        if policy.needs_state:
            batch["sim_state"] = [h["sim_state"] for h in history]
        chunk = np.asarray(policy(batch, action_steps), dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[1] != 2 or len(chunk) == 0 or not np.isfinite(chunk).all():
            raise ValueError(f"policy {type(policy).__name__} returned an action chunk of shape "
                             f"{chunk.shape} (finite: {np.isfinite(chunk).all()}); expected (K>=1, 2) finite")
        for action in chunk[:action_steps]:
            action = np.clip(action, 0.0, ARENA)
            if record:
                frames.append(item["image"])
                actions.append(action.astype(np.float32))
                agent_pos.append(item["agent_pos"])
            obs, _, terminated, _, info = env.step(action)
            steps += 1
            coverage = float(info["coverage"])
            max_cov = max(max_cov, coverage)
            item = observe(obs)
            if terminated or steps >= max_steps:
                success = bool(terminated)
                break
    res = EpisodeResult(seed=seed, max_reward=reward_from_coverage(max_cov), max_coverage=max_cov,
                        final_coverage=coverage, success=success,
                        steps=steps, seconds=time.time() - t0)
    if record:
        res.frames = np.stack(frames) if frames else np.zeros((0, *item["image"].shape), np.uint8)
        res.actions = np.stack(actions) if actions else np.zeros((0, 2), np.float32)
        res.agent_pos = np.stack(agent_pos) if agent_pos else np.zeros((0, 2), np.float32)
    return res


# -- policies by name, and parallel evaluation ------------------------------------------------------
def make_policy(spec):
    """'expert', 'random', or a zero-argument callable that builds the policy in the worker (a
    picklable one, e.g. ``functools.partial(pipeline.policy.load_policy, bundle)``, for workers > 1)."""
    if callable(spec):
        return spec()
    if spec == "expert":
        from uva_sim.pusht.expert import ExpertPolicy

        return ExpertPolicy()
    if spec == "random":
        return RandomPolicy()
    raise ValueError(f"policy {spec!r}: expected 'expert', 'random' or a callable that builds a policy")


_WORKER: dict = {}


def _init_worker(spec, obs_size: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    _WORKER["env"] = make_env(obs_size)
    _WORKER["policy"] = make_policy(spec)


def _worker_episode(args) -> EpisodeResult:
    seed, max_steps, action_steps, video_dir, record = args
    res = run_episode(_WORKER["env"], _WORKER["policy"], seed, max_steps, action_steps,
                      record=record or video_dir is not None)
    if video_dir is not None and res.frames is not None and len(res.frames):
        from uva_io.video import write_mp4

        frames = np.concatenate([res.frames, _WORKER["env"].get_obs()["pixels"][None]])
        res.video = str(write_mp4(Path(video_dir) / f"seed{seed}.mp4", frames, fps=10))
    if not record:
        res.frames = res.actions = res.agent_pos = None
    return res


def run_parallel(spec, seeds, workers: int = 1, max_steps: int = 300, action_steps: int = 8,
                 video_dir: str | Path | None = None, record: bool = False, obs_size: int = 96):
    """Yield EpisodeResults (in seed order) from ``workers`` processes, each with its own env+policy."""
    seeds = list(seeds)
    if video_dir is not None:
        Path(video_dir).mkdir(parents=True, exist_ok=True)
    jobs = [(s, max_steps, action_steps, None if video_dir is None else str(video_dir), record) for s in seeds]
    if workers <= 1:
        _init_worker(spec, obs_size)
        for j in jobs:
            yield _worker_episode(j)
        return
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(spec, obs_size)) as pool:
        yield from pool.map(_worker_episode, jobs, chunksize=1)


def evaluate_policy(spec, seeds=TEST_SEEDS, workers: int = 1, max_steps: int = 300, action_steps: int = 8,
                    video_dir: str | Path | None = None, log=print, name: str | None = None) -> dict:
    """Run the protocol and return {score, success_rate, episodes: [...]}."""
    t0 = time.time()
    episodes = []
    for res in run_parallel(spec, seeds, workers, max_steps, action_steps, video_dir):
        episodes.append(res.summary())
        if log:
            log(f"[pusht] seed {res.seed}: max coverage {res.max_coverage:.3f} reward {res.max_reward:.3f} "
                f"{'success' if res.success else 'fail'} in {res.steps} steps ({res.seconds:.1f} s)")
    return {
        "policy": name or str(spec), "num_episodes": len(episodes),
        "score": score_of([e["max_reward"] for e in episodes]),
        "success_rate": float(np.mean([e["success"] for e in episodes])) if episodes else math.nan,
        "mean_steps": float(np.mean([e["steps"] for e in episodes])) if episodes else math.nan,
        "seconds": time.time() - t0, "max_steps": max_steps, "action_steps": action_steps,
        "episodes": episodes,
    }


def parse_seeds(text: str) -> list[int]:
    """'100000:100050' (half-open range), '1,2,3', or one number."""
    text = text.strip()
    if ":" in text:
        a, b = text.split(":", 1)
        seeds = list(range(int(a), int(b)))
    else:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    if not seeds:
        raise ValueError(f"--seeds {text!r} names no seed")
    return seeds


def write_report(result: dict, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    atomic_write(path, json.dumps(result, indent=2).encode())
    return path
