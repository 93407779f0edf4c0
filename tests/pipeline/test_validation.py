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
