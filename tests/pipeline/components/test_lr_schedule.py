"""Warmup then cosine, in optimizer steps."""

import pytest
import torch

from pipeline.components.lr_schedule import lr_factor, warmup_cosine


def test_linear_warmup_then_cosine_to_the_floor():
    assert [lr_factor(s, 4, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 20) == pytest.approx(1.0)
    assert lr_factor(12, 4, 20) == pytest.approx(0.5)  # half way through the cosine
    assert lr_factor(20, 4, 20) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(25, 4, 20, min_lr_ratio=0.1) == pytest.approx(0.1)  # stays at the floor
    assert lr_factor(0, 0, 10) == pytest.approx(1.0)  # no warmup


def test_scheduler_steps_the_factor():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = warmup_cosine(opt, 2, 6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:3] == pytest.approx([1.0, 2.0, 2.0])
    assert lrs[3] < lrs[2] and lrs[5] < lrs[4]
