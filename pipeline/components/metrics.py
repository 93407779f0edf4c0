"""What a run reports: one MLflow run per job (rank 0), stdout lines, throughput and MFU.

- ``Tracker``: the MLflow run, created on the first start and continued after a requeue; params
  are the flattened config; a local store keeps its artifacts in the run folder.
- ``StepMeter``: per log window, samples/s, the fraction of time spent waiting for data and
  the mean loss of each masking mode.
- ``FlopCounter``: model FLOPs of forward + backward counted (torch's FlopCounterMode: matmuls,
  attention) over the first micro-batches in a ``with`` block; MFU is FLOPs per second over the
  device's dense bf16 peak.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import torch

from uva.modes import MODE_NAMES

# Dense bf16 peak FLOP/s per device, for MFU; UVA_PEAK_TFLOPS overrides (other GPUs, fp32, CPU).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def flatten(node, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}."""
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for k, v in node.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


class Tracker:
    """MLflow on rank 0 only: one run per job, continued after a requeue."""

    def __init__(self, run_dir: str | Path, experiment: str, tracking_uri: str | None, rank: int,
                 run_id: str | None, params: dict):
        self.active = rank == 0
        self.run_id = run_id
        if not self.active:
            return
        import mlflow

        self.mlflow = mlflow
        local = Path(run_dir).resolve()
        mlflow.set_tracking_uri(tracking_uri or f"sqlite:///{local / 'mlflow.db'}")
        if mlflow.get_experiment_by_name(experiment) is None:
            # a local store keeps its artifacts in the run folder, not in the working directory
            remote = tracking_uri and not tracking_uri.startswith(("sqlite:", "file:"))
            mlflow.create_experiment(experiment, artifact_location=None if remote else (local / "mlartifacts").as_uri())
        mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run()
        self.run_id = run.info.run_id
        if not run_id:
            mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.active:
            self.mlflow.log_metrics(metrics, step=step)

    def artifact(self, path: str | Path) -> None:
        if self.active:
            self.mlflow.log_artifact(str(path))

    def close(self) -> None:
        if self.active:
            self.mlflow.end_run()


class StepMeter:
    """Throughput, data wait and per-mode loss over the steps since the last ``report``."""

    def __init__(self, world_size: int):
        self.world_size = world_size
        self._reset()

    def _reset(self) -> None:
        self.start, self.wait, self.samples = time.time(), 0.0, 0
        self.mode_sum = torch.zeros(len(MODE_NAMES))
        self.mode_n = torch.zeros(len(MODE_NAMES))

    @contextlib.contextmanager
    def waiting(self):
        """Time spent inside the block counts as waiting for data."""
        t0 = time.time()
        yield
        self.wait += time.time() - t0

    def add(self, out: dict) -> None:
        """Account one micro-batch's model output (per-sample losses and their modes)."""
        per = out["per_sample"].detach().float().cpu()
        modes = out["modes"].cpu()
        self.mode_sum.index_add_(0, modes, per)
        self.mode_n.index_add_(0, modes, torch.ones_like(per))
        self.samples += per.numel() * self.world_size

    def report(self) -> tuple[dict[str, float], float]:
        """(metrics, elapsed seconds) of the window, and a new window starts."""
        elapsed = max(time.time() - self.start, 1e-9)
        metrics = {"samples_per_s": self.samples / elapsed, "data_wait_frac": self.wait / elapsed}
        for i, name in enumerate(MODE_NAMES):
            if self.mode_n[i] > 0:
                metrics[f"mode_loss/{name}"] = float(self.mode_sum[i] / self.mode_n[i])
        self._reset()
        return metrics, elapsed


def peak_flops(device: torch.device, bf16: bool) -> float | None:
    """The device's dense peak FLOP/s (UVA_PEAK_TFLOPS, else the bf16 table for known GPUs)."""
    if os.environ.get("UVA_PEAK_TFLOPS"):
        return float(os.environ["UVA_PEAK_TFLOPS"]) * 1e12
    if device.type != "cuda" or not bf16:
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


class FlopCounter:
    """Counts forward + backward FLOPs of the first ``num_counted`` micro-batches; reports MFU."""

    def __init__(self, peak: float | None, num_counted: int = 3):
        self.peak, self.num_counted = peak, num_counted
        self.counted: list[int] = []
        self.micro = 0  # micro-batches since the last report

    @contextlib.contextmanager
    def count(self):
        """Wrap one micro-batch's forward and backward."""
        self.micro += 1
        if self.peak is None or len(self.counted) >= self.num_counted:
            yield
            return
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            yield
        self.counted.append(counter.get_total_flops())

    def report(self, elapsed: float) -> dict[str, float]:
        """MFU and TFLOP/s per rank over ``elapsed`` seconds; a new window starts."""
        metrics = {}
        if self.peak is not None and self.counted:
            per_second = sum(self.counted) / len(self.counted) * self.micro / elapsed
            metrics = {"mfu": per_second / self.peak, "tflops_per_rank": per_second / 1e12}
        self.micro = 0
        return metrics
