"""gym-pusht helpers: legacy start states, exact state save/restore, T geometry, fast physics.

The simulator state is the agent's position and velocity and the block's position and angle
(the block is quasi-static: the space's damping of 0 zeroes body velocities every physics
step). Restoring a state sets the block angle *before* its position: pymunk rotates a body
about its centre of gravity, which for the T is not the body origin, so the other order moves
the block. Legacy start states (the evaluation protocol) deliberately keep the old order,
position then angle, exactly as gym-pusht's ``reset_to_state`` and the legacy test did.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

SUCCESS_COVERAGE = 0.95
INSTRUCTION = "push the T onto the green target"  # the task, as demos and evaluation state it
GOAL_POSE = (256.0, 256.0, math.pi / 4)
ARENA = 512.0
AGENT_RADIUS = 15.0
# Outline of the T in the block's body frame (gym-pusht add_tee, scale 30, length 4).
T_OUTLINE = np.array([(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)],
                     dtype=np.float64)


def make_env(obs_size: int = 96):
    """A gym-pusht PushTEnv rendering rgb off-screen (no display needed)."""
    import os

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from gym_pusht.envs.pusht import PushTEnv
    return PushTEnv(obs_type="pixels_agent_pos", render_mode="rgb_array",
                    observation_width=obs_size, observation_height=obs_size)


def legacy_start_state(seed: int) -> np.ndarray:
    """The Diffusion Policy test start state for ``seed``: [agent x, y, block x, y, angle]."""
    rs = np.random.RandomState(seed=seed)
    return np.array([rs.randint(50, 450), rs.randint(50, 450), rs.randint(100, 400), rs.randint(100, 400),
                     rs.randn() * 2 * np.pi - np.pi], dtype=np.float64)


def reward_from_coverage(coverage: float) -> float:
    """Protocol reward: coverage / 0.95 clipped to [0, 1]."""
    return float(np.clip(coverage / SUCCESS_COVERAGE, 0.0, 1.0))


@dataclass(frozen=True)
class SimState:
    """Everything that determines the future of a PushT episode."""

    agent: tuple[float, float]
    agent_vel: tuple[float, float]
    block: tuple[float, float]
    angle: float


def get_state(env) -> SimState:
    a, v, b = env.agent.position, env.agent.velocity, env.block.position
    return SimState((a.x, a.y), (v.x, v.y), (b.x, b.y), float(env.block.angle))


def set_state(env, s: SimState) -> None:
    """Restore ``s`` exactly: block angle first, then position (see the module doc)."""
    env.agent.position = s.agent
    env.agent.velocity = s.agent_vel
    env.block.angle = s.angle
    env.block.position = s.block
    env.block.velocity = (0.0, 0.0)
    env.block.angular_velocity = 0.0


def advance(env, action) -> None:
    """One control step (10 physics steps of the PD controller), as ``env.step`` but without
    computing the observation or the coverage: what the planner's rollouts need."""
    ax, ay = float(action[0]), float(action[1])
    agent, space = env.agent, env.space
    kp, kv, dt = env.k_p, env.k_v, env.dt
    for _ in range(int(1 / (dt * env.control_hz))):
        p, v = agent.position, agent.velocity
        agent.velocity = (v.x + (kp * (ax - p.x) - kv * v.x) * dt, v.y + (kp * (ay - p.y) - kv * v.y) * dt)
        space.step(dt)


def rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def outline_world(pos, angle: float) -> np.ndarray:
    """The T's outline vertices in world coordinates for a body pose."""
    return T_OUTLINE @ rotation(angle).T + np.asarray(pos, dtype=np.float64)


GOAL_OUTLINE = outline_world(GOAL_POSE[:2], GOAL_POSE[2])


def pose_error(pos, angle: float) -> float:
    """Mean distance (px) between the T's outline vertices and the goal's: 0 at the goal."""
    return float(np.linalg.norm(outline_world(pos, angle) - GOAL_OUTLINE, axis=1).mean())


def coverage_of(pos, angle: float) -> float:
    """Fraction of the goal T covered by a block at this pose (as the environment computes it)."""
    import shapely.geometry as sg

    goal = sg.Polygon(GOAL_OUTLINE)
    return float(goal.intersection(sg.Polygon(outline_world(pos, angle))).area / goal.area)
