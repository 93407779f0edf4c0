"""Shared fixtures: tiny model configs, synthetic latents, generated videos."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from uva import UVA, model_config  # noqa: E402


LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def no_leaked_launch_variables():
    """A test that runs training in-process exports RANK, MASTER_ADDR & co.; left behind, they
    would make every later launch from this process join that rendezvous. Put them back."""
    before = {k: os.environ.get(k) for k in LAUNCH_VARS}
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def cli(name: str) -> str:
    """The path of one of the project's console scripts in the environment running the tests."""
    return str(Path(sys.executable).parent / name)


@pytest.fixture
def tiny_cfg():
    return model_config("uva-tiny")


@pytest.fixture
def tiny_model(tiny_cfg):
    torch.manual_seed(0)
    return UVA(tiny_cfg)


@pytest.fixture
def make_batch(tiny_cfg):
    """Factory: a random latent batch for the tiny model."""

    def make(b: int = 4, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        c = tiny_cfg
        shape = (c.latent_channels, c.latent_size, c.latent_size)
        return {
            "history": torch.randn(b, c.num_history, *shape, generator=g),
            "future": torch.randn(b, c.num_future, *shape, generator=g),
            "actions": torch.randn(b, c.action_horizon, c.action_dim, generator=g),
            "has_actions": torch.ones(b, dtype=torch.bool),
        }

    return make


def make_video_file(path: Path, num_frames: int = 20, size: tuple[int, int] = (64, 80), fps: int = 10,
                    codec: str = "libx264") -> Path:
    """Write a real video (moving gradient) with PyAV; returns its path."""
    from uva_io.video import write_mp4

    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.stack([np.stack([(xx * 3 + t * 7) % 256, (yy * 3) % 256,
                                 np.full_like(xx, (t * 11) % 256)], -1) for t in range(num_frames)])
    return write_mp4(path, frames.astype(np.uint8), fps, codec=codec)


@pytest.fixture
def make_video():
    return make_video_file
