"""Generate small robot-style demonstration sets: mp4 videos, actions, a JSONL manifest.

Two scenes rendered with numpy, no download:

- ``pusher2d`` (default): an agent disc follows 2-d target-position actions (10 Hz, like PushT)
  through a sequence of goals, pushing a square block when it touches it. One camera.
- ``franka``: a table-top pick-and-place shaped like a Franka Panda set (DROID / Open-X style):
  a planar 7-joint arm with a gripper, two coloured blocks and a bowl; 8-d joint-position
  actions (7 joint targets + gripper, 1 = open), 8-d proprioception (joint positions + gripper),
  two cameras (``exterior``: the whole table; ``wrist``: a close view that moves with the
  hand), 15 Hz, and an instruction per episode that names the block to put in the bowl, so
  the actions depend on the instruction.

    uva-make-synthetic-demos --output data/synthetic --num-episodes 16
    uva-make-synthetic-demos --robot franka --output data/franka --num-episodes 24
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


# --- franka-shaped arm scene -------------------------------------------------------------

ARM_BASE = np.array([0.5, 0.97])  # table coordinates in [0, 1]^2, y down; the arm stands at the front edge
ARM_LINKS = np.array([0.22, 0.18, 0.14, 0.12, 0.08, 0.06, 0.05])  # reach 0.85
ARM_REST = np.array([-np.pi / 2, 0.3, 0.3, 0.2, 0.1, 0.0, 0.0])  # first joint points into the table
BLOCKS = {"red": (210, 60, 50), "blue": (50, 80, 210)}
BOWL = np.array([0.5, 0.22])


def arm_points(q: np.ndarray) -> np.ndarray:
    """Joint angles (7,) -> the 8 joint positions (base first, hand last), (8, 2)."""
    ang = np.cumsum(q)
    steps = ARM_LINKS[:, None] * np.stack([np.cos(ang), np.sin(ang)], 1)
    return np.concatenate([ARM_BASE[None], ARM_BASE + np.cumsum(steps, 0)])


def arm_ik(q: np.ndarray, target: np.ndarray, iters: int = 8) -> np.ndarray:
    """Joint angles near ``q`` that put the hand at ``target``: damped least squares with a pull
    towards the rest pose in the arm's null space (smooth 7-joint trajectories)."""
    q = q.copy()
    for _ in range(iters):
        pts = arm_points(q)
        err = target - pts[-1]
        # d hand / d q_i = perpendicular of (hand - joint_i)
        rel = pts[-1] - pts[:-1]
        jac = np.stack([-rel[:, 1], rel[:, 0]], 0)  # (2, 7)
        inv = jac.T @ np.linalg.inv(jac @ jac.T + 0.01 * np.eye(2))
        q = q + inv @ err + 0.05 * (np.eye(7) - inv @ jac) @ (ARM_REST - q)
    return q


def _segment_dist(px: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((px - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return np.linalg.norm(px - (a + t[..., None] * ab), axis=-1)


def render_arm(q: np.ndarray, grip: float, blocks: dict[str, np.ndarray], size: int,
               center: np.ndarray | None = None, extent: float = 1.0) -> np.ndarray:
    """One view of the table: ``extent`` table units across, centred at ``center`` (the whole
    table when None). The hand's two fingers open with ``grip``."""
    center = np.array([0.5, 0.5]) if center is None else center
    uv = (np.stack(np.mgrid[0:size, 0:size][::-1], -1).astype(np.float32) + 0.5) / size
    px = center + (uv - 0.5) * extent  # (size, size, 2) table coordinates
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (200, 185, 160)  # table
    img[(np.abs(px) > 1.0).any(-1) | (px < 0).any(-1)] = (90, 90, 90)  # off the table
    img[np.linalg.norm(px - BOWL, axis=-1) < 0.09] = (240, 240, 235)  # bowl
    img[np.abs(np.linalg.norm(px - BOWL, axis=-1) - 0.09) < 0.012] = (150, 150, 150)
    for name, pos in blocks.items():
        img[(np.abs(px - pos) < 0.045).all(-1)] = BLOCKS[name]
    pts = arm_points(q)
    for i in range(7):
        img[_segment_dist(px, pts[i], pts[i + 1]) < 0.022 - 0.002 * i] = (235 - 10 * i, 235 - 10 * i, 240)
    hand, ang = pts[-1], np.sum(q)
    side = np.array([-np.sin(ang), np.cos(ang)]) * (0.015 + 0.035 * grip)
    fwd = np.array([np.cos(ang), np.sin(ang)]) * 0.04
    for s in (side, -side):
        img[_segment_dist(px, hand + s, hand + s + fwd) < 0.009] = (40, 40, 40)
    return img


def make_arm_episode(rng: np.random.Generator, num_steps: int, size: int, target: str | None = None) -> dict:
    """One episode: {exterior, wrist: (T, size, size, 3) uint8; actions, proprio: (T, 8);
    instruction; blocks: where the blocks started}. ``target``: the block to move (default: drawn)."""
    names = list(BLOCKS)
    drawn = names[int(rng.integers(len(names)))]
    target = target or drawn
    blocks = {}
    for name in names:  # two blocks apart from each other, in front of the bowl
        while True:
            pos = rng.uniform([0.15, 0.42], [0.85, 0.72])
            if all(np.linalg.norm(pos - p) > 0.22 for p in blocks.values()):
                blocks[name] = pos
                break
    start = {k: v.copy() for k, v in blocks.items()}
    q = arm_ik(ARM_REST, np.array([0.5, 0.8]) + rng.normal(0, 0.04, 2), iters=30)
    grip, held, phase, wait = 1.0, False, 0, 0
    hand = arm_points(q)[-1]
    speed = rng.uniform(0.012, 0.018)  # table units per step
    ext, wrist, actions, proprio = [], [], [], []
    for _ in range(num_steps):
        # reach the named block, close the gripper on it (a few steps), carry it over the bowl, let go
        if phase == 0 and np.linalg.norm(hand - blocks[target]) < 0.015:
            phase, wait = 1, 4
        elif phase == 1 and wait == 0:
            phase, held = 2, True
        elif phase == 2 and np.linalg.norm(hand - BOWL) < 0.015:
            phase, held = 3, False
        goal = blocks[target] if phase <= 1 else BOWL if phase == 2 else BOWL + np.array([0.0, 0.15])
        want_grip = 0.0 if phase in (1, 2) else 1.0
        wait = max(wait - 1, 0)
        step = goal - hand
        way = hand + step * min(1.0, speed / (np.linalg.norm(step) + 1e-9))
        q_cmd = arm_ik(q, np.clip(way + rng.normal(0, 0.002, 2), 0.02, 0.98))
        ext.append(render_arm(q, grip, blocks, size))
        wrist.append(render_arm(q, grip, blocks, size, center=hand, extent=0.35))
        actions.append(np.concatenate([q_cmd, [want_grip]]).astype(np.float32))
        proprio.append(np.concatenate([q, [grip]]).astype(np.float32))
        q = q + 0.8 * (q_cmd - q)  # a joint controller that lags a little
        grip = grip + 0.5 * (want_grip - grip)
        hand = arm_points(q)[-1]
        if held:
            blocks[target] = hand.copy()
    return {"exterior": np.stack(ext), "wrist": np.stack(wrist), "actions": np.stack(actions),
            "proprio": np.stack(proprio), "instruction": f"put the {target} block in the bowl", "blocks": start}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="uva-make-synthetic-demos", description=__doc__.split("\n\n")[0])
    p.add_argument("--output", required=True)
    p.add_argument("--num-episodes", type=int, default=16)
    p.add_argument("--num-steps", type=int, default=None, help="steps per episode (default: 60 pusher2d, 90 franka)")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--fps", type=int, default=None, help="frame rate (default: 10 pusher2d, 15 franka)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--robot", default="pusher2d", help="pusher2d (one camera, 2-d) or franka (two cameras, 8-d)")
    args = p.parse_args(argv)
    arm = args.robot == "franka"
    steps = args.num_steps or (90 if arm else 60)
    fps = args.fps or (15 if arm else 10)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(args.num_episodes):
        rng = np.random.default_rng([args.seed, i])
        ep = f"ep{i:05d}"
        rec = {"episode_id": ep, "actions": f"{ep}_actions.npy", "robot": args.robot, "fps": fps}
        if arm:
            demo = make_arm_episode(rng, steps, args.size)
            for cam in ("exterior", "wrist"):
                write_mp4(out / f"{ep}_{cam}.mp4", demo[cam], fps)
            actions = demo["actions"]
            np.save(out / f"{ep}_state.npy", demo["proprio"])
            rec.update(video={"exterior": f"{ep}_exterior.mp4", "wrist": f"{ep}_wrist.mp4"},
                       proprio=f"{ep}_state.npy", instruction=demo["instruction"])
        else:
            frames, actions = make_episode(rng, steps, args.size)
            write_mp4(out / f"{ep}.mp4", frames, fps)
            rec["video"] = f"{ep}.mp4"
        np.save(out / f"{ep}_actions.npy", actions)
        lines.append(json.dumps(rec))
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.num_episodes} episodes to {out / 'manifest.jsonl'}")


if __name__ == "__main__":
    main()
