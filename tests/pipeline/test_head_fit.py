"""The action_head stage's parts: policy conditions cached per window, the head fitted alone on them."""

from __future__ import annotations

import pytest
import torch

from pipeline.head_fit import ConditionCache, fit_action_head, head_loss, policy_conditions
from uva import UVA, model_config
from uva import rng


def windows(cfg, n: int, seed: int = 0, action_dim: int | None = None):
    """Windows whose action chunk is +1 or -1 (every entry) by the sign of the history's mean:
    an answer the policy condition carries, but no constant does."""
    g = torch.Generator().manual_seed(seed)
    a = action_dim or cfg.action_dim
    for _ in range(n):
        sign = 1.0 if torch.rand(1, generator=g).item() < 0.5 else -1.0
        hist = torch.randn(cfg.num_history, cfg.latent_channels, cfg.latent_size, cfg.latent_size, generator=g) + sign
        yield {"history": hist, "future": torch.zeros(cfg.num_future, *hist.shape[1:]),
               "actions": torch.full((cfg.action_horizon, cfg.action_dim), sign) * (torch.arange(cfg.action_dim) < a),
               "has_actions": torch.tensor(True), "action_mask": torch.arange(cfg.action_dim) < a,
               "embodiment": torch.tensor(0)}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return UVA(model_config("uva-tiny"))


def test_the_cache_holds_what_the_policy_computes(model):
    wins = list(windows(model.cfg, 5))
    cache = policy_conditions(model, iter(wins), batch_size=2)  # two full batches and a rest
    assert len(cache) == 5 and cache.num_windows == 5 and cache.dims is None
    hist = torch.stack([w["history"] for w in wins])
    mask = torch.ones(5, model.cfg.num_future * model.cfg.tokens_per_step, dtype=torch.bool)
    model.eval()
    _, cond = model.features(hist, None, mask, None, torch.zeros(5, dtype=torch.bool))
    assert torch.allclose(cache.cond, cond, atol=1e-5)
    assert torch.equal(cache.target, torch.stack([w["actions"] for w in wins]).flatten(1))
    # a narrower robot's padding: zero targets, and dimension weights that leave it out
    narrow = policy_conditions(model, windows(model.cfg, 3, action_dim=1))
    assert narrow.dims is not None and narrow.dims.view(3, model.cfg.action_horizon, -1)[:, :, 1:].sum() == 0
    assert narrow.target.view(3, model.cfg.action_horizon, -1)[:, :, 1:].abs().sum() == 0
    with pytest.raises(ValueError, match="no window with actions"):
        policy_conditions(model, iter([]))


def test_fitting_trains_the_action_head_alone_and_it_learns_what_the_condition_carries(model):
    torch.set_num_threads(1)
    cache = policy_conditions(model, windows(model.cfg, 256))
    held = policy_conditions(model, windows(model.cfg, 64, seed=1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss0 = head_loss(model, held)
    losses = fit_action_head(model, cache, steps=300, batch_size=64, lr=2e-3, warmup_steps=20, ema_decay=0.99)
    assert len(losses) == 300
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("action_head.") for k in changed), sorted(changed)[:5]
    assert head_loss(model, held) < 0.5 * loss0
    # the sampled chunks on held-out windows have the sign their history says
    hist = torch.stack([w["history"] for w in windows(model.cfg, 64, seed=1)])
    sign = torch.stack([w["actions"][0, 0] for w in windows(model.cfg, 64, seed=1)])
    pred = model.predict_action(hist, num_steps=16, generator=rng.generator(0))
    assert (torch.sign(pred.mean((1, 2))) == sign).float().mean() >= 0.9


def test_fitting_refuses_impossible_settings(model):
    cache = ConditionCache(torch.zeros(4, model.cfg.decoder_width), torch.zeros(4, 8), None, 4)
    for kw in ({"steps": 0}, {"batch_size": 0}, {"lr": 0.0}, {"warmup_steps": -1}):
        args = {"steps": 2, "batch_size": 2, "lr": 1e-3, **kw}
        with pytest.raises(ValueError, match="action_head stage"):
            fit_action_head(model, cache, **args)
