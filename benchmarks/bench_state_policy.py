"""PushT with perfect perception: how well the project's action head imitates the planning
expert when it is given the simulator state instead of images, for a training budget.

It separates the two halves of the image policy's problem. The expert's demonstrations are
rolled out again with their states recorded (agent position, block position and angle); a small
MLP maps the state to a condition, and the action head (``uva.heads.DiffusionMLP`` with
``uva.diffusion.GaussianDiffusion``: cosine schedule, epsilon + learned variance, 16 respaced
sampling steps, temperature 1, x0 clip 5, as the policy bundles sample) denoises the chunk of
the next 8 actions, relative to the agent. ``--head mse`` regresses the chunk instead (one answer
per state: where demonstrations choose among pushes, it averages them). Evaluation: the PushT
protocol on the 50 test seeds. ``--batch`` x ``--draws`` is the action head's rows per step
(noise draws per chunk, the model's ``action_batch_mul``); ``--steps`` the optimizer steps.

    python benchmarks/bench_state_policy.py --demos 100 --run diffusion:256:1:6000 \\
        --run diffusion:16:2:4000 --run diffusion:16:64:4000 --run diffusion:16:64:4000:absolute \\
        --run mse:256:1:6000

Each ``--run HEAD:BATCH:DRAWS:STEPS`` trains and evaluates one policy on the same demos.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing as mp
import os
import platform
import time

import numpy as np
import torch
import torch.nn as nn

HORIZON = 8  # actions per chunk (the embedded default's)
# chunk targets: "relative" = (action - agent position) / 64 px (they span about +-1 unit);
# "absolute" = (action - 256) / 256, the arena mapped to [-1, 1] (as q01/q99 normalization of
# PushT's target positions does)
TARGETS = {"relative": 64.0, "absolute": 256.0}


def expert_episode(seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The planning expert from the legacy start state of ``seed``: (states (T, 5), actions (T, 2))
    of a successful episode, None if it failed. States: agent x, y, block x, y, angle."""
    from uva_sim.pusht.env import get_state, legacy_start_state, make_env
    from uva_sim.pusht.expert import ExpertPolicy

    env, expert = make_env(96), ExpertPolicy()
    env.reset(options={"reset_to_state": legacy_start_state(seed)})
    states, actions = [], []
    while len(actions) < 300:
        chunk = expert({"sim_state": [get_state(env)]}, 8)
        for a in chunk:
            s = get_state(env)
            states.append([*s.agent, *s.block, s.angle])
            actions.append(a)
            _, _, done, _, _ = env.step(a)
            if done:
                return np.array(states, np.float32), np.array(actions, np.float32)
            if len(actions) >= 300:
                break
    return None


def features(states: np.ndarray) -> np.ndarray:
    """(N, 5) states -> (N, 6): positions / 512, the angle as sin and cos."""
    return np.concatenate([states[:, :4] / 512.0, np.sin(states[:, 4:]), np.cos(states[:, 4:])], 1).astype(np.float32)


def origin(targets: str, states: np.ndarray) -> np.ndarray:
    """(N, 1, 2) the point chunk targets are measured from."""
    return states[:, None, :2] if targets == "relative" else np.full((len(states), 1, 2), 256.0, np.float32)


def windows(episodes, targets: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every step of every episode: the state's features and the next HORIZON actions (the last
    one repeated past the end) as chunk targets (see TARGETS)."""
    xs, ys = [], []
    for states, actions in episodes:
        idx = np.minimum(np.arange(len(states))[:, None] + np.arange(HORIZON)[None], len(states) - 1)
        xs.append(features(states))
        ys.append(((actions[idx] - origin(targets, states)) / TARGETS[targets]).reshape(len(states), -1))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys).astype(np.float32))


class StatePolicyNet(nn.Module):
    def __init__(self, head: str, width: int = 256, depth: int = 3):
        super().__init__()
        from uva.diffusion import GaussianDiffusion
        from uva.heads import DiffusionMLP

        self.kind = head
        self.encoder = nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                     nn.Linear(width, width))
        if head == "diffusion":
            self.head = DiffusionMLP(2 * HORIZON, width, width, depth)
            self.diffusion = GaussianDiffusion.cosine(1000)
        else:
            self.head = nn.Sequential(nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2 * HORIZON))

    def loss(self, x: torch.Tensor, y: torch.Tensor, draws: int, generator: torch.Generator) -> torch.Tensor:
        cond = self.encoder(x)
        if self.kind == "diffusion":
            return self.diffusion.loss(self.head, y.repeat(draws, 1), cond.repeat(draws, 1), generator).mean()
        return ((self.head(cond) - y) ** 2).mean()

    @torch.no_grad()
    def act(self, x: torch.Tensor, generator: torch.Generator, sampler) -> torch.Tensor:
        cond = self.encoder(x)
        if self.kind == "diffusion":
            return sampler.sample(self.head, (x.shape[0], 2 * HORIZON), cond, generator, 1.0, 5.0)
        return self.head(cond)


def train(head: str, x: torch.Tensor, y: torch.Tensor, batch: int, draws: int, steps: int, seed: int = 0):
    torch.manual_seed(seed)
    net = StatePolicyNet(head)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        loss = net.loss(x[idx], y[idx], draws, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net, float(loss)


class StatePolicy:
    """The trained net behind the runner's policy interface (it reads the simulator state)."""

    needs_state = True
    num_obs = 1

    def __init__(self, head: str, targets: str, state_dict: dict):
        self.targets = targets
        self.net = StatePolicyNet(head)
        self.net.load_state_dict(state_dict)
        self.net.eval()
        self.sampler = self.net.diffusion.respaced(16) if head == "diffusion" else None
        self.g = torch.Generator()

    def reset(self, seed: int = 0) -> None:
        self.g.manual_seed(seed)

    def __call__(self, obs: dict, num_actions: int) -> np.ndarray:
        s = obs["sim_state"][-1]
        state = np.array([[*s.agent, *s.block, s.angle]], np.float32)
        y = self.net.act(torch.from_numpy(features(state)), self.g, self.sampler).numpy().reshape(HORIZON, 2)
        return y * TARGETS[self.targets] + origin(self.targets, state)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demos", type=int, default=100, help="expert episodes from start-state seeds 0..N-1")
    p.add_argument("--run", action="append", required=True, metavar="HEAD:BATCH:DRAWS:STEPS[:TARGETS]",
                   help="TARGETS: relative (default) or absolute")
    p.add_argument("--action-steps", default="8,4", help="actions executed per call, each evaluated")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    runs = []
    for spec in args.run:
        head, batch, draws, steps, *rest = spec.split(":")
        targets = rest[0] if rest else "relative"
        if head not in ("diffusion", "mse") or targets not in TARGETS:
            p.error(f"--run {spec}: head must be diffusion or mse, targets relative or absolute")
        runs.append((head, int(batch), int(draws), int(steps), targets))
    torch.set_num_threads(args.workers)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} cpus={os.cpu_count()} torch={torch.__version__}",
          flush=True)
    t0 = time.time()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        episodes = [e for e in pool.map(expert_episode, range(args.demos)) if e is not None]
    print(f"demos: {len(episodes)} of {args.demos} successful, {time.time() - t0:.0f} s", flush=True)
    from uva_sim.pusht.runner import evaluate_policy

    print("\n| head | targets | batch | draws | steps | train s | " + " | ".join(
        f"score ({k} executed) | successes" for k in args.action_steps.split(",")) + " |")
    print("|---|---|---|---|---|---|" + "---|---|" * len(args.action_steps.split(",")))
    for head, batch, draws, steps, targets in runs:
        x, y = windows(episodes, targets)
        t0 = time.time()
        net, _ = train(head, x, y, batch, draws, steps)
        cells = [head, targets, str(batch), str(draws), str(steps), f"{time.time() - t0:.0f}"]
        for k in args.action_steps.split(","):
            r = evaluate_policy(functools.partial(StatePolicy, head, targets, net.state_dict()), workers=args.workers,
                                action_steps=int(k), log=None)
            cells += [f"{r['score']:.4f}", f"{sum(e['success'] for e in r['episodes'])}/{r['num_episodes']}"]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
