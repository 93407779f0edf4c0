"""Generate a small robot-style demonstration set: mp4 videos, 2-d actions, a JSONL manifest.

A planar "pusher" scene rendered with numpy: an agent disc follows 2-d target-position actions
(10 Hz, like PushT) through a sequence of goals, pushing a square block when it touches it.
It gives the embedded default real video files with matching action streams, without any
download.

    uva-make-synthetic-demos --output data/synthetic --num-episodes 16
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from uva_io.video import write_mp4


def render(agent: np.ndarray, block: np.ndarray, goal: np.ndarray, size: int) -> np.ndarray:
    """One (size, size, 3) uint8 frame; positions are in [0, 1]^2."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.full((size, size, 3), 235, dtype=np.uint8)
    gx, gy = goal
    img[(np.abs(xx - gx) < 0.08) & (np.abs(yy - gy) < 0.08)] = (150, 220, 150)  # goal zone
    bx, by = block
    img[(np.abs(xx - bx) < 0.07) & (np.abs(yy - by) < 0.07)] = (120, 120, 140)  # block
    ax, ay = agent
    img[(xx - ax) ** 2 + (yy - ay) ** 2 < 0.045**2] = (60, 90, 220)  # agent
    return img


def make_episode(rng: np.random.Generator, num_steps: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    agent = rng.uniform(0.15, 0.85, 2)
    block = rng.uniform(0.3, 0.7, 2)
    goal = rng.uniform(0.2, 0.8, 2)
    frames, actions = [], []
    for t in range(num_steps):
        # move behind the block (relative to the goal) then push it towards the goal
        push_dir = goal - block
        push_dir = push_dir / (np.linalg.norm(push_dir) + 1e-6)
        behind = block - push_dir * 0.12
        target = behind if np.linalg.norm(agent - behind) > 0.04 else block + push_dir * 0.05
        target = np.clip(target + rng.normal(0, 0.01, 2), 0.05, 0.95)
        frames.append(render(agent, block, goal, size))
        actions.append(target.astype(np.float32))
        step = target - agent
        agent = agent + np.clip(step, -0.05, 0.05)
        gap = agent - block
        if np.max(np.abs(gap)) < 0.07 + 0.045:  # contact: shove the block out of the agent
            block = np.clip(block + (block - agent) * 0.3, 0.08, 0.92)
    return np.stack(frames), np.stack(actions)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="uva-make-synthetic-demos", description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True)
    p.add_argument("--num-episodes", type=int, default=16)
    p.add_argument("--num-steps", type=int, default=60)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--robot", default="pusher2d")
    args = p.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(args.num_episodes):
        rng = np.random.default_rng([args.seed, i])
        frames, actions = make_episode(rng, args.num_steps, args.size)
        ep = f"ep{i:05d}"
        write_mp4(out / f"{ep}.mp4", frames, args.fps)
        np.save(out / f"{ep}_actions.npy", actions)
        lines.append(json.dumps({"episode_id": ep, "video": f"{ep}.mp4", "actions": f"{ep}_actions.npy",
                                 "robot": args.robot, "fps": args.fps}))
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.num_episodes} episodes to {out / 'manifest.jsonl'}")


if __name__ == "__main__":
    main()
