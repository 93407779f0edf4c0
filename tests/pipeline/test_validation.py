"""Held-out metrics of a model of several views."""

from dataclasses import replace

import torch

from pipeline.validation import evaluate
from uva import UVA, model_config


def test_latent_error_counts_only_the_cameras_an_episode_has():
    """An absent view has no truth (its latents are zeros): the prediction there is not an error."""
    torch.manual_seed(0)
    cfg = replace(model_config("uva-tiny"), num_views=2)
    model = UVA(cfg)
    shape = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    g = torch.Generator().manual_seed(1)
    batch = {"history": torch.randn(2, 2, 2, *shape, generator=g), "future": torch.randn(2, 2, 2, *shape, generator=g),
             "actions": torch.randn(2, 4, 2, generator=g), "has_actions": torch.ones(2, dtype=torch.bool),
             "view_mask": torch.tensor([[True, False], [True, True]])}
    batch["history"][0, :, 1] = 0
    batch["future"][0, :, 1] = 0
    res = evaluate(model, batch, 2, 2, torch.Generator().manual_seed(0))
    err = (res["future"] - batch["future"]).pow(2)
    want = torch.cat([err[0, :, 0].flatten(), err[1].flatten()]).mean()
    assert abs(res["metrics"]["val/latent_mse"] - want.item()) < 1e-6
    assert abs(err.mean().item() - want.item()) > 1e-3  # the absent view's prediction would change it


class Recorder:
    """Stands in for the MLflow tracker: keeps what the validator logs."""

    def __init__(self):
        self.logged = []

    def log(self, metrics, step):
        self.logged.append((step, metrics))

    def artifact(self, path):
        raise AssertionError("no VAE given, so no prediction video")


def test_validator_averages_its_metrics_over_eval_batches(tmp_path):
    """eval_batches=3: the means of three held-out batches, the same three (and the same noise
    draws) an evaluation of one batch at a time would see, and not the first batch alone."""
    from pipeline.data import DataConfig, SourceConfig, WindowConfig
    from pipeline.train import build_model
    from pipeline.train_config import ModelSection, TrainConfig
    from pipeline.validation import Validator
    from tests.pipeline.test_data import make_set

    src = make_set(tmp_path / "robot", "arm", 6, 24, True)
    data = DataConfig(sources=[SourceConfig(path=str(src))], num_workers=0, shuffle_buffer=8,
                      window=WindowConfig(num_history=2, num_future=2, frame_stride=2, action_horizon=4))
    cfg = TrainConfig(model=ModelSection("uva-tiny", {"latent_channels": 4, "latent_size": 2, "width": 32,
                                                      "decoder_width": 32}),
                      data=data, eval_every=5, eval_batch_size=2, eval_batches=3, eval_sampling_steps=2,
                      eval_iters=2, run_dir=str(tmp_path / "run"))
    torch.manual_seed(0)
    model, _ = build_model(cfg, 0)
    tracker = Recorder()
    validator = Validator(cfg, 0, 1, torch.device("cpu"), False, tracker)
    got = validator.run(model, 5)
    assert tracker.logged == [(5, got)]

    from uva import rng

    batches = validator._batches(5)
    assert len(batches) == 3 and all(b["history"].shape[0] == 2 for b in batches)
    g = rng.generator(cfg.seed + 5, torch.device("cpu"))
    each = [evaluate(model, b, 2, 2, g)["metrics"] for b in batches]
    for key in ("val/action_mse", "val/latent_mse", "val/loss/policy", "val/loss/video"):
        want = sum(m[key] for m in each) / 3
        assert abs(got[key] - want) < 1e-6 * max(1.0, abs(want)), key
    assert abs(got["val/action_mse"] - each[0]["val/action_mse"]) > 1e-4  # more than the first batch
