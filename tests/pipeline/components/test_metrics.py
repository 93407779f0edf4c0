"""Step metrics: per-mode means, throughput, data wait; MFU counted over the first micro-batches."""

import time

import pytest
import torch

from pipeline.components.metrics import FlopCounter, StepMeter, flatten
from uva.modes import MODE_INDEX


def test_step_meter_means_per_mode_and_resets():
    meter = StepMeter(world_size=2)
    out = {"per_sample": torch.tensor([1.0, 3.0, 10.0]),
           "modes": torch.tensor([MODE_INDEX["policy"], MODE_INDEX["policy"], MODE_INDEX["video"]])}
    with meter.waiting():
        time.sleep(0.02)
    meter.add(out)
    metrics, elapsed = meter.report()
    assert metrics["mode_loss/policy"] == 2.0 and metrics["mode_loss/video"] == 10.0 and "mode_loss/joint" not in metrics
    assert metrics["samples_per_s"] == pytest.approx(6 / elapsed)  # 3 samples on each of 2 ranks
    assert 0 < metrics["data_wait_frac"] <= 1
    again, _ = meter.report()
    assert again["samples_per_s"] == 0 and not any(k.startswith("mode_loss/") for k in again)


def test_flop_counter_counts_the_first_micro_batches_only():
    lin = torch.nn.Linear(64, 64)
    x = torch.randn(8, 64)
    counter = FlopCounter(peak=1e12, num_counted=2)
    for _ in range(4):
        with counter.count():
            lin(x).sum().backward()
    assert len(counter.counted) == 2 and counter.counted[0] == 2 * 2 * 8 * 64 * 64  # forward + weight gradient (x needs none)
    m = counter.report(elapsed=2.0)
    assert m["tflops_per_rank"] == pytest.approx(counter.counted[0] * 4 / 2.0 / 1e12)
    assert m["mfu"] == pytest.approx(m["tflops_per_rank"])  # peak 1 TFLOP/s
    assert FlopCounter(peak=None).report(1.0) == {}


def test_flatten_config():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": [1]}) == {"a.b": 1, "a.c.d": 2, "e": [1]}
