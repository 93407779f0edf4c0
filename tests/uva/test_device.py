"""Device rules that a CPU can check: every random draw happens on the device it is asked for,
with a generator of that device; targets stay float32 when the weights are bf16; the static
policy sampler is the plain one with its noise drawn up front."""

import pytest
import torch

from uva import UVA, model_config, rng
from uva.diffusion import GaussianDiffusion
from uva.modes import MODE_NAMES, build_masks, mode_weights_tensor, sample_modes
from uva.sampler import ActionSampler

ALL = mode_weights_tensor({n: 1.0 for n in MODE_NAMES})
META = torch.device("meta")


class MetaGenerator:
    """Stands in for a generator of the meta device (PyTorch has none): it is only ever looked
    at by the checking wrappers below, never by a real kernel."""

    device = META


@pytest.fixture
def checked_random(monkeypatch):
    """torch's random functions replaced by ones that fail when the generator's device is not the
    device of the draw (PyTorch's CUDA check, on any device) and otherwise return empty tensors
    on that device. Returns the list of (function, generator device, draw device) seen."""
    seen = []

    def check(name, gen, device):
        device = torch.device(device) if device is not None else torch.device("cpu")
        seen.append((name, None if gen is None else gen.device, device))
        if gen is not None and gen.device != device:
            raise AssertionError(f"{name}: generator on {gen.device}, draw on {device}")
        return device

    def shaped(size):
        return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else tuple(size)

    def randn(*size, generator=None, device=None, dtype=None, **kw):
        return torch.empty(shaped(size), device=check("randn", generator, device), dtype=dtype or torch.float32)

    def rand(*size, generator=None, device=None, dtype=None, **kw):
        return torch.empty(shaped(size), device=check("rand", generator, device), dtype=dtype or torch.float32)

    def randint(low, high, size, generator=None, device=None, **kw):
        return torch.empty(tuple(size), device=check("randint", generator, device), dtype=torch.long)

    def multinomial(weights, num, generator=None, **kw):
        check("multinomial", generator, weights.device)
        return torch.zeros(weights.shape[0], num, dtype=torch.long, device=weights.device)

    for name, fn in (("randn", randn), ("rand", rand), ("randint", randint), ("multinomial", multinomial)):
        monkeypatch.setattr(torch, name, fn)
    return seen


@pytest.fixture
def meta_model():
    torch.manual_seed(0)
    return UVA(model_config("uva-tiny")).to(META)


def meta_batch(cfg, b=2):
    shape = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    return {"history": torch.empty(b, cfg.num_history, *shape, device=META),
            "future": torch.empty(b, cfg.num_future, *shape, device=META),
            "actions": torch.empty(b, cfg.action_horizon, cfg.action_dim, device=META)}


def test_sampling_and_loss_paths_draw_on_the_models_device(checked_random, meta_model):
    cfg, g = meta_model.cfg, MetaGenerator()
    b = meta_batch(cfg)
    rows = torch.empty(6, cfg.token_dim, device=META)
    loss = meta_model.diffusion.loss(meta_model.video_head, rows, torch.empty(6, cfg.decoder_width, device=META), g)
    assert loss.device == META and loss.shape == (6,)
    modes = sample_modes(ALL, torch.ones(2, dtype=torch.bool, device=META), generator=g)
    masks = build_masks(modes, cfg.num_future * cfg.tokens_per_frame, 0.7, 0.25, generator=g)
    assert modes.device == META and all(v.device == META for v in masks.values())
    video_cond, action_cond = meta_model.features(b["history"], b["future"], masks["future_mask"], b["actions"],
                                                  masks["actions_visible"])
    assert video_cond.device == action_cond.device == META
    actions = meta_model.predict_action(b["history"], num_steps=4, generator=g)
    actions = meta_model.inverse_dynamics(b["history"], b["future"], num_steps=4, generator=g)
    assert actions.device == META and actions.shape == (2, cfg.action_horizon, cfg.action_dim)
    sampler = ActionSampler(meta_model, num_steps=4, batch_size=2)
    assert sampler(b["history"], generator=g).device == META
    draws = {name for name, _, _ in checked_random}
    assert draws == {"randn", "rand", "randint", "multinomial"}
    assert all(dev == META for _, _, dev in checked_random)


def test_a_generator_of_another_device_is_refused(checked_random, meta_model):
    b = meta_batch(meta_model.cfg)
    cpu = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="generator on cpu cannot draw on meta"):
        meta_model.predict_action(b["history"], num_steps=2, generator=cpu)
    with pytest.raises(ValueError, match="generator on cpu cannot draw on meta"):
        sample_modes(ALL, torch.ones(2, dtype=torch.bool, device=META), generator=cpu)


def test_every_draw_passes_generator_and_device(tiny_model, make_batch, monkeypatch):
    """With real numbers: the forward pass and video generation give each random function the
    generator it was handed and an explicit device (a draw without one lands on the CPU)."""
    b = make_batch(2)
    calls = []
    real = {n: getattr(torch, n) for n in ("randn", "rand", "randint", "multinomial")}

    def wrap(name):
        def fn(*a, **kw):
            calls.append((name, kw.get("generator"), kw.get("device", "weights" if name == "multinomial" else None)))
            return real[name](*a, **kw)
        return fn

    for n in real:
        monkeypatch.setattr(torch, n, wrap(n))
    g = rng.generator(0, "cpu")
    tiny_model(**b, mode_weights=ALL, generator=g)
    tiny_model.generate_video(b["history"], num_iters=2, num_steps=2, generator=g)
    tiny_model.predict_action(b["history"], num_steps=2, generator=g)
    assert len(calls) > 5
    assert all(gen is g and dev is not None for _, gen, dev in calls), calls


def test_rng_rule():
    assert rng.generator(3, "cpu").device == torch.device("cpu")
    assert rng.same_device(torch.device("cuda"), torch.device("cuda:0"))
    assert not rng.same_device(torch.device("cuda:0"), torch.device("cuda:1"))
    assert torch.equal(rng.randn((5,), rng.generator(1), "cpu"), rng.randn((5,), rng.generator(1), "cpu"))
    with pytest.raises(ValueError, match="uva.rng.generator"):
        rng.check(torch.Generator(), "cuda")


def test_schedule_tables_are_float32_per_device():
    d = GaussianDiffusion.cosine(100)
    tabs = d.tables("cpu")
    assert tabs is d.tables(torch.device("cpu"))  # made once
    assert all(v.dtype == torch.float32 for k, v in tabs.items() if k != "timestep_map")
    assert tabs["timestep_map"].dtype == torch.long
    assert torch.equal(tabs["sqrt_ac"], d.sqrt_ac.float())


def test_bf16_weights_train_on_float32_targets(tiny_cfg, make_batch, monkeypatch):
    """DeepSpeed's bf16 mode keeps the weights in bf16; the batch stays float32 and the diffusion
    targets reach the loss unrounded (bf16 would move PushT actions by 0.4-0.8 px)."""
    torch.manual_seed(0)
    model = UVA(tiny_cfg).to(torch.bfloat16)
    b = make_batch(2)
    b["actions"] = b["actions"] + 0.002  # values bf16 cannot hold
    assert not torch.equal(b["actions"].bfloat16().float(), b["actions"])
    targets = []
    real_loss = model.diffusion.loss

    def loss(head, x0, cond, generator=None, weight=None):
        targets.append(x0)
        return real_loss(head, x0, cond, generator, weight)

    monkeypatch.setattr(model.diffusion, "loss", loss)
    out = model(**b, mode_weights=ALL, modes=torch.full((2,), 4), generator=rng.generator(0))  # joint
    assert out["loss"].dtype == torch.float32 and torch.isfinite(out["loss"])
    video, action = targets
    k = tiny_cfg.diffusion_batch_mul
    assert video.dtype == action.dtype == torch.float32
    assert torch.equal(action, b["actions"].flatten(1).repeat(k, 1))
    assert set(video.flatten().tolist()) <= set(b["future"].flatten().tolist())  # the stored values, unrounded
    act = model.predict_action(b["history"], num_steps=2, generator=rng.generator(0))
    assert act.dtype == torch.float32


def test_batch_to_device_keeps_float32():
    from pipeline.data import batch_to_device

    batch = {"history": torch.zeros(1, 2), "actions": torch.zeros(1, 3), "has_actions": torch.ones(1, dtype=torch.bool)}
    out = batch_to_device(batch, torch.device("cpu"))
    assert {k: v.dtype for k, v in out.items()} == {k: v.dtype for k, v in batch.items()}


def test_static_sampler_is_predict_action_with_noise_drawn_first(tiny_model, make_batch):
    b = make_batch(1)
    tiny_model.eval()
    sampler = ActionSampler(tiny_model, num_steps=6)
    got = sampler(b["history"], generator=rng.generator(5))
    noise = rng.randn(sampler.noise.shape, rng.generator(5), "cpu")
    want = tiny_model.predict_action(b["history"], num_steps=6, noise=noise)
    assert torch.equal(got, want)
    assert torch.equal(sampler(b["history"], generator=rng.generator(5)), got)  # replayable
    assert not torch.equal(sampler(b["history"], generator=rng.generator(6)), got)
    with pytest.raises(ValueError, match="batch size"):
        sampler(make_batch(2)["history"])
    with pytest.raises(ValueError, match="CUDA"):
        ActionSampler(tiny_model, num_steps=2, backend="graph")


def test_static_sampler_traces_as_one_graph(tiny_model, make_batch):
    """What torch.compile / a CUDA graph needs: the whole call is one graph (no breaks, no
    host syncs, no draws), checked with dynamo's eager backend on the CPU."""
    tiny_model.eval()
    sampler = ActionSampler(tiny_model, num_steps=4)
    sampler.history.copy_(make_batch(1)["history"])
    sampler.noise.copy_(rng.randn(sampler.noise.shape, rng.generator(0), "cpu"))
    compiled = torch.compile(sampler._run, backend="eager", fullgraph=True)
    assert torch.equal(compiled(), sampler._run())
