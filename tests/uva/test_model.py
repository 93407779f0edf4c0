"""The UVA model: masking semantics, decoupled decoding, mode mixing, overfitting, determinism."""

import pytest
import torch

from uva import UVA, count_parameters, model_config
from uva.modes import MODE_INDEX, MODE_NAMES, mode_weights_tensor

ALL = mode_weights_tensor({n: 1.0 for n in MODE_NAMES})


def modes(*names):
    return torch.tensor([MODE_INDEX[n] for n in names])


def loss_for(model, batch, mode, seed=0, **changes):
    b = {**batch, **changes}
    g = torch.Generator().manual_seed(seed)
    return model(**b, mode_weights=ALL, modes=modes(*[mode] * b["history"].shape[0]), generator=g)["loss"]


def test_policy_actions_ignore_future_latents(tiny_model, tiny_cfg, make_batch):
    b = make_batch(2)
    L = tiny_cfg.num_future * tiny_cfg.tokens_per_frame
    mask = torch.ones(2, L, dtype=torch.bool)
    a1 = tiny_model.sample_actions(b["history"], b["future"], mask, 8, generator=torch.Generator().manual_seed(1))
    a2 = tiny_model.sample_actions(b["history"], b["future"] * 5 + 3, mask, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a1, a2)


def randomize_heads(model):
    """Heads start zero-initialised (output independent of the condition); give them weights."""
    torch.manual_seed(3)
    for head in (model.video_head, model.action_head):
        for p in head.parameters():
            torch.nn.init.normal_(p, std=0.2)


def test_inverse_dynamics_actions_depend_on_future(tiny_model, make_batch):
    randomize_heads(tiny_model)
    b = make_batch(2)
    a1 = tiny_model.inverse_dynamics(b["history"], b["future"], 8, generator=torch.Generator().manual_seed(1))
    a2 = tiny_model.inverse_dynamics(b["history"], b["future"] * 5 + 3, 8, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a1, a2)


def test_video_mode_ignores_actions_forward_dynamics_uses_them(tiny_model, make_batch):
    randomize_heads(tiny_model)
    b = make_batch(3)
    other = torch.randn_like(b["actions"]) * 4
    assert torch.equal(loss_for(tiny_model, b, "video"), loss_for(tiny_model, b, "video", actions=other))
    assert not torch.equal(loss_for(tiny_model, b, "forward_dynamics"),
                           loss_for(tiny_model, b, "forward_dynamics", actions=other))


def test_predict_action_never_calls_video_head(tiny_model, make_batch, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("video head called during policy inference")

    monkeypatch.setattr(tiny_model.video_head, "forward", boom)
    actions = tiny_model.predict_action(make_batch(2)["history"], num_steps=4)
    assert actions.shape == (2, tiny_model.cfg.action_horizon, tiny_model.cfg.action_dim)
    with pytest.raises(AssertionError):
        tiny_model.generate_video(make_batch(1)["history"], num_iters=1, num_steps=2)


def test_per_sample_modes_route_losses(tiny_model, make_batch):
    b = make_batch(5)
    out = tiny_model(**b, mode_weights=ALL, modes=modes(*MODE_NAMES), generator=torch.Generator().manual_seed(0))
    v, a = out["video_loss"], out["action_loss"]
    idx = {n: i for i, n in enumerate(MODE_NAMES)}
    for name in ("policy", "inverse_dynamics"):
        assert v[idx[name]] == 0 and a[idx[name]] > 0
    for name in ("video", "forward_dynamics"):
        assert a[idx[name]] == 0 and v[idx[name]] > 0
    assert v[idx["joint"]] > 0 and a[idx["joint"]] > 0
    assert torch.allclose(out["loss"], (v + a).mean())


def test_action_free_samples_only_take_video_modes(tiny_model, make_batch):
    from uva.modes import sample_modes

    has = torch.tensor([False] * 200 + [True] * 200)
    m = sample_modes(ALL, has, generator=torch.Generator().manual_seed(0))
    assert set(m[:200].tolist()) == {MODE_INDEX["video"]}
    assert len(set(m[200:].tolist())) == len(MODE_NAMES)
    b = make_batch(4)
    b["has_actions"] = torch.tensor([False, False, True, True])
    out = tiny_model(**b, mode_weights=ALL, modes=modes("policy", "joint", "policy", "joint"))
    assert out["action_loss"][:2].abs().sum() == 0 and (out["action_loss"][2:] > 0).all()


def test_mask_ratio_distribution():
    from uva.modes import truncated_normal_ratio

    r = truncated_normal_ratio(20000, 0.7, 0.25, torch.Generator().manual_seed(0))
    assert r.min() >= 0.7 and r.max() <= 1.0
    assert 0.84 < r.mean() < 0.87  # mean of N(1, .25) truncated to [.7, 1]


@pytest.mark.slow
def test_tiny_model_overfits_fixed_batch_in_every_mode():
    """One model memorises a fixed batch in all five modes at once (each row of the batch
    trained in its own mode): every mode's loss falls below a tenth of its start."""
    # a little wider than uva-tiny so it can memorise every token of the batch; 8 noise draws per
    # action chunk: with uva-tiny's 2 the action losses plateau near first/10 (gradient noise at
    # the low-noise end), with 8 they fall ~70-130x in 600 steps (video modes ~25-30x)
    cfg = model_config("uva-tiny", width=64, decoder_width=64, head_width=64, action_head_width=64,
                       action_batch_mul=8)
    torch.manual_seed(0)
    model = UVA(cfg)
    c = cfg
    g0 = torch.Generator().manual_seed(1)
    shape = (c.latent_channels, c.latent_size, c.latent_size)
    k = len(MODE_NAMES)
    one = {"history": torch.randn(2, c.num_history, *shape, generator=g0),
           "future": torch.randn(2, c.num_future, *shape, generator=g0),
           "actions": torch.randn(2, c.action_horizon, c.action_dim, generator=g0),
           "has_actions": torch.ones(2, dtype=torch.bool)}
    b = {key: v.repeat(k, *[1] * (v.ndim - 1)) for key, v in one.items()}  # the 2 samples once per mode
    m = modes(*[name for name in MODE_NAMES for _ in range(2)])
    steps = 600
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(0)

    def per_mode():
        with torch.no_grad():
            per = torch.stack([model(**b, mode_weights=ALL, modes=m, generator=torch.Generator().manual_seed(s))
                               ["per_sample"] for s in range(8)]).mean(0)
        return {name: float(per[m == MODE_INDEX[name]].mean()) for name in MODE_NAMES}

    first = per_mode()
    for _ in range(steps):
        loss = model(**b, mode_weights=ALL, modes=m, generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    last = per_mode()
    assert all(last[n] < first[n] / 10 for n in MODE_NAMES), {n: first[n] / last[n] for n in MODE_NAMES}


def test_same_seed_same_outputs(tiny_cfg, make_batch):
    b = make_batch(2)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = UVA(tiny_cfg)
        loss = model(**b, mode_weights=ALL, generator=torch.Generator().manual_seed(3))["loss"]
        act = model.predict_action(b["history"], num_steps=4, generator=torch.Generator().manual_seed(3))
        outs.append((loss, act))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_generate_video_shapes_and_forward_dynamics(tiny_model, tiny_cfg, make_batch):
    b = make_batch(2)
    for iters in (1, 3):
        v = tiny_model.generate_video(b["history"], num_iters=iters, num_steps=3)
        assert v.shape == b["future"].shape and torch.isfinite(v).all()
    v = tiny_model.forward_dynamics(b["history"], b["actions"], num_iters=2, num_steps=3)
    assert v.shape == b["future"].shape


def test_bad_shapes_and_config_errors(tiny_model, make_batch):
    b = make_batch(2)
    with pytest.raises(ValueError, match="history"):
        tiny_model.predict_action(b["history"][:, :1])
    with pytest.raises(ValueError, match="action_horizon"):
        model_config("uva-tiny", action_horizon=5)
    with pytest.raises(ValueError, match="unknown model size"):
        model_config("uva-XL")


def test_config_driven_shapes_patch_and_proprio_lang():
    cfg = model_config("uva-tiny", latent_size=8, patch_size=2, num_history=3, num_future=2,
                       action_horizon=6, action_dim=7, proprio_dim=5, lang_dim=12, lang_tokens=3)
    model = UVA(cfg)
    b = 2
    h = torch.randn(b, 3, cfg.latent_channels, 8, 8)
    f = torch.randn(b, 2, cfg.latent_channels, 8, 8)
    out = model(h, f, torch.randn(b, 6, 7), torch.ones(b, dtype=torch.bool), ALL,
                proprio=torch.randn(b, 3, 5), lang=torch.randn(b, 3, 12))
    out["loss"].backward()
    assert model.predict_action(h, num_steps=2, proprio=torch.randn(b, 3, 5)).shape == (b, 6, 7)


def test_grad_checkpointing_same_loss(tiny_cfg, make_batch):
    b = make_batch(2)
    torch.manual_seed(0)
    model = UVA(tiny_cfg)
    l1 = model(**b, mode_weights=ALL, generator=torch.Generator().manual_seed(0))["loss"]
    model.set_grad_checkpointing(True)
    l2 = model(**b, mode_weights=ALL, generator=torch.Generator().manual_seed(0))["loss"]
    l2.backward()
    assert torch.allclose(l1, l2)


def test_bf16_autocast(tiny_model, make_batch):
    b = make_batch(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny_model(**b, mode_weights=ALL)
        act = tiny_model.predict_action(b["history"], num_steps=2)
    assert torch.isfinite(out["loss"]) and act.dtype == torch.float32


def test_registry_sizes():
    with torch.device("meta"):
        b = UVA(model_config("uva-B"))
    counts = count_parameters(b)
    assert b.cfg.encoder_depth == b.cfg.decoder_depth == 12 and b.cfg.width == 768 and b.cfg.head_depth == 6
    assert 200e6 < counts["total"] < 300e6


def test_sampling_recovers_an_exact_denoiser_and_bounds_a_wrong_one():
    from uva.diffusion import GaussianDiffusion

    d = GaussianDiffusion.cosine(1000)
    c = torch.tensor([[0.7, -1.3]])

    def oracle(x, t, cond):  # the true eps for data that is always c
        ab = d.alphas_cumprod[t].float()[:, None]
        eps = (x - ab.sqrt() * c) / (1 - ab).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], -1)

    def off_by_one(x, t, cond):  # a net: biased, and its output range is what it saw in training
        return torch.cat([(oracle(x, t, cond)[:, :2] + 1.0).clamp(-3, 3), torch.zeros_like(x)], -1)

    for steps in (100, 16, 8):
        out = d.respaced(steps).sample(oracle, (1, 2), torch.zeros(1, 1), torch.Generator().manual_seed(0), clip_x0=5.0)
        torch.testing.assert_close(out, c, atol=1e-3, rtol=0)
    raw = d.respaced(100).sample(off_by_one, (1, 2), torch.zeros(1, 1), torch.Generator().manual_seed(0))
    bounded = d.respaced(100).sample(off_by_one, (1, 2), torch.zeros(1, 1), torch.Generator().manual_seed(0), clip_x0=5.0)
    assert raw.abs().max() > 20  # the last step's 1/sqrt(alpha) ~ 30 amplifies the eps error
    assert bounded.abs().max() <= 5.0


def test_predict_action_stays_within_action_clip(tiny_cfg, make_batch):
    torch.manual_seed(0)
    model = UVA(tiny_cfg)
    for p in model.action_head.out.parameters():  # an untrained head that predicts eps badly
        torch.nn.init.normal_(p, std=1.0)
    batch = make_batch(2)
    a = model.predict_action(batch["history"], num_steps=16, generator=torch.Generator().manual_seed(0))
    assert a.abs().max() <= tiny_cfg.action_clip


def embodied(**kw):
    from dataclasses import replace

    torch.manual_seed(0)
    model = UVA(replace(model_config("uva-tiny"), action_dim=3, embodiments=["arm", "pusht", "human"], **kw))
    randomize_heads(model)
    return model


def test_padded_action_dimensions_get_neither_input_nor_loss(make_batch):
    """A 2-d robot in a 3-d model: whatever the padded dimension holds, in the target or the
    input, the loss is the same in every mode; without the mask it would not be."""
    model = embodied()
    b = make_batch(4)
    b["actions"] = torch.randn(4, 4, 3)
    mask = torch.tensor([[True, True, False]] * 4)
    other = b["actions"].clone()
    other[..., 2] = torch.randn(4, 4) * 10
    for mode in ("policy", "joint", "forward_dynamics", "inverse_dynamics"):
        a = loss_for(model, b, mode, action_mask=mask)
        assert torch.equal(a, loss_for(model, b, mode, action_mask=mask, actions=other)), mode
    assert not torch.equal(loss_for(model, b, "policy"), loss_for(model, b, "policy", actions=other))
    # all dimensions kept: the mask changes nothing
    full = torch.ones(4, 3, dtype=torch.bool)
    torch.testing.assert_close(loss_for(model, b, "joint", action_mask=full), loss_for(model, b, "joint"))


def test_padded_action_dimensions_are_sampled_as_the_zeros_they_were_trained_as(make_batch):
    """What the action head says about a padded dimension (untrained: no loss there) does not
    reach the robot's own dimensions of a sampled chunk, and the padding comes back as zeros;
    without the mask it does."""
    model = embodied()
    b = make_batch(2)
    mask = torch.tensor([[True, True, False]] * 2)
    other = embodied()
    a, h = model.cfg.action_dim, model.cfg.action_horizon
    rows = [k * a + 2 for k in range(h)]  # the padded dimension of each action in the flat chunk
    with torch.no_grad():  # garbage eps and variance for the padded dimension only
        for r in rows:
            other.action_head.out.bias[r] += 3.0
            other.action_head.out.bias[h * a + r] += 5.0
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    x = model.predict_action(b["history"], num_steps=8, generator=g(), action_mask=mask)
    y = other.predict_action(b["history"], num_steps=8, generator=g(), action_mask=mask)
    torch.testing.assert_close(x, y)
    assert (x[..., 2] == 0).all()
    assert not torch.allclose(model.predict_action(b["history"], num_steps=8, generator=g())[..., :2],
                              other.predict_action(b["history"], num_steps=8, generator=g())[..., :2])


def test_the_embodiment_reaches_the_model(make_batch):
    """Another robot's row gives other actions from the same frames and noise, and training
    moves only the rows of the robots in the batch."""
    model = embodied()
    b = make_batch(2)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    arm = model.predict_action(b["history"], num_steps=8, generator=g(), embodiment=torch.tensor([0, 0]))
    pusht = model.predict_action(b["history"], num_steps=8, generator=g(), embodiment=torch.tensor([1, 1]))
    assert not torch.allclose(arm, pusht)
    b["actions"] = torch.randn(2, 4, 3)
    out = model(**b, mode_weights=ALL, generator=g(), embodiment=torch.tensor([0, 2]))
    out["loss"].backward()
    grad = model.embed.embodiment.weight.grad
    assert grad[0].abs().sum() > 0 and grad[2].abs().sum() > 0 and grad[1].abs().sum() == 0


def test_a_model_without_embodiments_loads_and_a_table_grows_by_new_robots():
    """A checkpoint trained before embodiments (no table) loads into a model with one (the table
    keeps its init); a table of 2 robots loads into a model of 3: the first rows kept, the new
    one the mean of the others."""
    from dataclasses import replace

    from pipeline.weights import load_weights

    torch.manual_seed(0)
    old = UVA(model_config("uva-tiny"))
    assert "embed.embodiment.weight" not in old.state_dict()
    new = UVA(replace(model_config("uva-tiny"), embodiments=["arm", "pusht"]))
    assert load_weights(new, old.state_dict(), "old", "uva-tiny") == ["embed.embodiment.weight"]
    assert torch.equal(new.backbone.decoder_pos, old.backbone.decoder_pos)
    grown = UVA(replace(model_config("uva-tiny"), embodiments=["arm", "pusht", "franka"]))
    load_weights(grown, new.state_dict(), "two", "uva-tiny")
    rows, table = grown.embed.embodiment.weight, new.embed.embodiment.weight
    assert torch.equal(rows[:2], table) and torch.allclose(rows[2], table.mean(0))
    with pytest.raises(ValueError, match=r"shape mismatch \[embed.embodiment.weight \(3, 32\) vs \(2, 32\)"):
        load_weights(new, grown.state_dict(), "three", "uva-tiny")
    load_weights(old, new.state_dict(), "with table", "uva-tiny")  # a model without one ignores it


def test_views_enter_as_grids_with_an_embedding_and_absent_views_are_masked():
    """Two cameras: each view is a grid of tokens with its own embedding (swapping the views
    changes the actions); an absent view's latents change nothing, and its tokens get no video
    loss; a one-view model keeps the parameter names of before (old checkpoints load)."""
    from dataclasses import replace

    torch.manual_seed(0)
    cfg = replace(model_config("uva-tiny"), num_views=2)
    model = UVA(cfg)
    randomize_heads(model)
    g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    shape = (cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    hist, fut = torch.randn(2, 2, 2, *shape, generator=g()), torch.randn(2, 2, 2, *shape, generator=g())
    a = model.predict_action(hist, num_steps=4, generator=g())
    assert not torch.allclose(a, model.predict_action(hist.flip(2), num_steps=4, generator=g()))
    one = torch.tensor([[True, False], [True, False]])
    other = hist.clone()
    other[:, :, 1] = torch.randn_like(other[:, :, 1]) * 3
    a = model.predict_action(hist, num_steps=4, generator=g(), view_mask=one)
    assert torch.equal(a, model.predict_action(other, num_steps=4, generator=g(), view_mask=one))
    futb = fut.clone()
    futb[:, :, 1] += 5
    batch = {"history": hist, "future": fut, "actions": torch.randn(2, 4, 2), "has_actions": torch.ones(2, dtype=torch.bool)}
    for mode in ("video", "joint"):
        la = loss_for(model, batch, mode, view_mask=one)
        assert torch.equal(la, loss_for(model, batch, mode, view_mask=one, future=futb, history=other)), mode
        assert not torch.equal(loss_for(model, batch, mode), loss_for(model, batch, mode, future=futb)), mode
    out = model.generate_video(hist, num_iters=2, num_steps=4, generator=g(), view_mask=one)
    assert out.shape == fut.shape
    with pytest.raises(ValueError, match="history must be"):
        model.predict_action(hist[:, :, 0], num_steps=4)
    single = UVA(model_config("uva-tiny")).state_dict()
    assert not any("view" in k or "absent" in k for k in single)
    assert set(model.state_dict()) - set(single) == {"embed.view_pos", "embed.absent"}


def view_tokens(model, hist, fut, view, views):
    """The embedded tokens of one view (prefix dropped), (B, Tf, N, W)."""
    c = model.cfg
    b, n = hist.shape[0], c.tokens_per_frame
    mask = torch.zeros(b, c.num_future * c.tokens_per_step, dtype=torch.bool)
    h, f = model.patchify(hist), model.patchify(fut)
    x = model.embed(h, f, mask, None, torch.zeros(b, dtype=torch.bool))[:, model.embed.num_prefix:]
    return x.view(b, c.num_future, views, n, -1)[:, :, view]


def test_views_are_fitted_to_a_robot_with_fewer_or_more_cameras():
    """A two-view checkpoint loads into a one-view model (a one-camera robot): that view's
    tokens are what they were (its embedding folded into the spatial one); into three views:
    the two kept, the third new; a one-view checkpoint grows to two views with its view
    unchanged."""
    from dataclasses import replace

    from pipeline.weights import load_weights

    torch.manual_seed(0)
    base = model_config("uva-tiny")
    two = UVA(replace(base, num_views=2))
    one, three = UVA(base), UVA(replace(base, num_views=3))
    shape = (base.latent_channels, base.latent_size, base.latent_size)
    g = torch.Generator().manual_seed(3)
    hist, fut = torch.randn(2, 2, 3, *shape, generator=g), torch.randn(2, 2, 3, *shape, generator=g)
    per_token = {"backbone.decoder_pos", "readout.video_pos", "readout.action_pool.weight"}
    assert set(load_weights(one, two.state_dict(), "two", "uva-tiny")) == per_token | {"embed.space_pos"}
    ref = view_tokens(two, hist[:, :, :2], fut[:, :, :2], 0, 2)
    torch.testing.assert_close(view_tokens(one, hist[:, :, 0], fut[:, :, 0], 0, 1), ref)
    n, tf = base.tokens_per_frame, base.num_future
    by_view = lambda m, v: m.readout.video_pos.view(tf, v, n, -1)  # noqa: E731
    assert torch.equal(by_view(one, 1)[:, 0], by_view(two, 2)[:, 0])
    assert set(load_weights(three, two.state_dict(), "two", "uva-tiny")) == per_token | {"embed.view_pos"}
    for v in (0, 1):
        torch.testing.assert_close(view_tokens(three, hist, fut, v, 3), view_tokens(two, hist[:, :, :2], fut[:, :, :2], v, 2))
    assert not torch.allclose(three.embed.view_pos[:, :, 2], three.embed.view_pos[:, :, 1])
    pool = three.readout.action_pool.weight.view(-1, tf, 3, n * base.action_readout_dim)
    assert (pool[:, :, 2] == 0).all() and torch.equal(pool[:, :, :2].flatten(1), two.readout.action_pool.weight)
    grown = UVA(replace(base, num_views=2))
    assert set(load_weights(grown, one.state_dict(), "one", "uva-tiny")) == per_token | {"embed.absent", "embed.view_pos"}
    torch.testing.assert_close(view_tokens(grown, hist[:, :, :2], fut[:, :, :2], 0, 2),
                               view_tokens(one, hist[:, :, 0], fut[:, :, 0], 0, 1))


def test_the_instruction_steers_the_actions_after_training_on_instruction_dependent_data(tiny_cfg):
    """The same frames with "push the block left" lead to actions of -1, with "... right" to +1;
    after training (instruction dropout on) each instruction gets its own actions, and the
    model still acts without one."""
    from uva_io.text import load_text_encoder

    encoder = load_text_encoder("hash:64", max_tokens=8)
    lang = torch.from_numpy(encoder.encode(["push the block left", "push the block right"]))  # (2, 8, 64)
    assert lang.shape == (2, 8, 64) and (lang[:, 4:] == 0).all()  # four words, then padding
    cfg = model_config("uva-tiny", lang_dim=64, lang_tokens=8, lang_dropout=0.1, action_batch_mul=8)
    torch.manual_seed(0)
    model = UVA(cfg)
    c = cfg
    g0 = torch.Generator().manual_seed(1)
    shape = (c.latent_channels, c.latent_size, c.latent_size)
    hist = torch.randn(1, c.num_history, *shape, generator=g0).expand(8, -1, -1, -1, -1)
    side = torch.tensor([0, 1] * 4)
    batch = {"history": hist, "future": torch.randn(8, c.num_future, *shape, generator=g0),
             "actions": (side * 2.0 - 1.0)[:, None, None].expand(8, c.action_horizon, c.action_dim).contiguous(),
             "has_actions": torch.ones(8, dtype=torch.bool), "lang": lang[side]}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    # 800 steps with 8 noise draws per chunk: learned with every seed tried (0-4; at 400 steps 4
    # of 5 are not); the prefix-token path alone needs far more
    for _ in range(800):
        loss = model(**batch, mode_weights=ALL, modes=modes(*["policy"] * 8), generator=g)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    act = {}
    for name, vec in (("left", lang[0]), ("right", lang[1]), ("none", torch.zeros(8, 64))):
        act[name] = model.predict_action(hist[:1], num_steps=16, generator=torch.Generator().manual_seed(3),
                                          lang=vec[None], temperature=0.0)
    assert act["left"].mean() < -0.5 and act["right"].mean() > 0.5, act
    assert act["none"].abs().max() < 5  # no instruction: a policy still
    with pytest.raises(ValueError, match=r"lang must be \(1, 8, 64\)"):
        model.predict_action(hist[:1], num_steps=2, lang=lang[:1, :4])


def test_tube_masking_masks_every_future_frame_at_the_same_positions():
    """mask_kind tube: one spatial mask per sample, repeated over the future frames (with the
    ratio's count of positions per frame); token masking draws each frame on its own."""
    from uva.modes import build_masks

    modes = torch.full((64,), MODE_INDEX["video"])
    g = torch.Generator().manual_seed(0)
    tube = build_masks(modes, 3 * 16, 0.5, 0.25, g, tube_frames=3)["future_mask"].view(64, 3, 16)
    assert torch.equal(tube[:, 0], tube[:, 1]) and torch.equal(tube[:, 0], tube[:, 2])
    assert (tube[:, 0].sum(1) >= 8).all() and tube[:, 0].float().mean() < 1
    token = build_masks(modes, 3 * 16, 0.5, 0.25, g)["future_mask"].view(64, 3, 16)
    assert not torch.equal(token[:, 0], token[:, 1])
    with pytest.raises(ValueError, match="not 3 frames"):
        build_masks(modes, 16, 0.5, 0.25, g, tube_frames=3)
    # the model trains and generates video with it (unmasking shared by the frames)
    cfg = model_config("uva-tiny", mask_kind="tube")
    model = UVA(cfg)
    hist = torch.randn(2, 2, cfg.latent_channels, cfg.latent_size, cfg.latent_size)
    out = model.generate_video(hist, num_iters=3, num_steps=2, generator=torch.Generator().manual_seed(1))
    assert out.shape == (2, cfg.num_future, cfg.latent_channels, cfg.latent_size, cfg.latent_size)


def test_a_width_space_mask_token_is_not_a_value_real_tokens_can_take():
    """mask_token_space width: the masked token's embedding is the projection of the other
    inputs plus a width vector outside the span of the latent projection (no latent token
    projects onto it); with latent space, a real token equal to the mask token is
    indistinguishable from a masked one."""
    torch.manual_seed(0)
    cfg = model_config("uva-tiny", mask_token_space="width", latent_channels=4, latent_size=4, patch_size=1)
    model = UVA(cfg)
    assert model.embed.mask_token.shape == (cfg.width,) and cfg.token_dim < cfg.width
    w_fut = model.embed.fuse.weight[:, : cfg.token_dim]  # (W, Dt): how a latent token enters
    m = model.embed.mask_token.detach()
    best = torch.linalg.lstsq(w_fut.detach(), m[:, None]).solution
    assert (w_fut.detach() @ best - m[:, None]).norm() > 0.5 * m.norm()  # far from any real token's image
    b, n = 1, cfg.num_future * cfg.tokens_per_step
    hist = torch.randn(b, cfg.num_history, n // cfg.num_future, cfg.token_dim)
    fut = torch.randn(b, cfg.num_future, n // cfg.num_future, cfg.token_dim)
    none = torch.zeros(b, dtype=torch.bool)
    masked = model.embed(hist, fut, torch.ones(b, n, dtype=torch.bool), None, none)
    zero = model.embed(hist, torch.zeros_like(fut), torch.zeros(b, n, dtype=torch.bool), None, none)
    torch.testing.assert_close(masked - zero, m.expand_as(masked).clone().index_fill_(1, torch.arange(model.embed.num_prefix), 0))
    latent = UVA(model_config("uva-tiny", latent_channels=4, latent_size=4, patch_size=1))
    copy = latent.embed.mask_token.detach().expand_as(fut)
    torch.testing.assert_close(latent.embed(hist, copy, torch.zeros(b, n, dtype=torch.bool), None, none),
                               latent.embed(hist, fut, torch.ones(b, n, dtype=torch.bool), None, none))


def test_dropout_trains_noisy_and_evaluates_deterministically(make_batch):
    cfg = model_config("uva-tiny", dropout=0.5)
    model = UVA(cfg)
    x = torch.randn(2, 5, cfg.width)
    block = model.backbone.encoder.blocks[0]
    model.train()
    assert not torch.equal(block(x), block(x))
    model.eval()
    assert torch.equal(block(x), block(x))
    with pytest.raises(ValueError, match="dropout"):
        model_config("uva-tiny", dropout=1.0)


def per_action_model(**kw):
    from dataclasses import replace

    torch.manual_seed(0)
    model = UVA(replace(model_config("uva-tiny"), action_cond="per_action", **kw))
    randomize_heads(model)
    return model


def test_per_action_conditions_are_one_per_action_and_keep_where_things_are(make_batch):
    """The per-action readout gives each action of the chunk its own condition, the action head
    denoises one action (action_dim values) per row, and the condition depends on where in the
    frame the decoder's features are: moving them changes it, which a mean over the frame's
    tokens could not."""
    model = per_action_model()
    cfg = model.cfg
    b = make_batch(2)
    visible = torch.zeros(2, dtype=torch.bool)
    mask = torch.ones(2, cfg.num_future * cfg.tokens_per_step, dtype=torch.bool)
    _, cond = model.features(b["history"], None, mask, None, visible)
    assert cond.shape == (2, cfg.action_horizon, cfg.decoder_width)
    assert not torch.allclose(cond[:, 0], cond[:, 1])  # actions of one chunk: conditions of their own
    assert model.action_head.target_dim == cfg.action_dim
    n = cfg.tokens_per_frame
    z = torch.randn(1, cfg.num_future * n, cfg.decoder_width)
    moved = z.clone()
    moved[:, :n] = z[:, :n].roll(1, dims=1)  # first future frame: the same features, other places
    readout = model.readout
    assert not torch.allclose(readout._per_action(z), readout._per_action(moved))
    torch.testing.assert_close(z.view(1, cfg.num_future, n, -1).mean(2), moved.view(1, cfg.num_future, n, -1).mean(2))


def test_per_action_training_and_sampling_keep_the_chunk_semantics(make_batch):
    """Per action, the loss still covers only the robot's own dimensions (padding gets none),
    padding is sampled as zeros, the policy ignores the future latents, and the static sampler
    with pre-drawn noise is ``predict_action`` exactly."""
    from uva import rng
    from uva.sampler import ActionSampler

    model = per_action_model(action_dim=3)
    b = make_batch(4)
    b["actions"] = torch.randn(4, 4, 3)
    mask = torch.tensor([[True, True, False]] * 4)
    other = b["actions"].clone()
    other[..., 2] = torch.randn(4, 4) * 10
    for mode in ("policy", "joint", "inverse_dynamics"):
        assert torch.equal(loss_for(model, b, mode, action_mask=mask),
                           loss_for(model, b, mode, action_mask=mask, actions=other)), mode
    assert not torch.equal(loss_for(model, b, "policy"), loss_for(model, b, "policy", actions=other))
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    x = model.predict_action(b["history"], num_steps=8, generator=g(), action_mask=mask)
    assert x.shape == (4, 4, 3) and (x[..., 2] == 0).all() and (x[..., :2] != 0).all()
    cfg = model.cfg
    mask_all = torch.ones(4, cfg.num_future * cfg.tokens_per_step, dtype=torch.bool)
    ignore = model.sample_actions(b["history"], b["future"], mask_all, 8, generator=g())
    torch.testing.assert_close(ignore, model.predict_action(b["history"], num_steps=8, generator=g()))
    model.eval()
    sampler = ActionSampler(model, num_steps=6)
    got = sampler(b["history"][:1], generator=rng.generator(5))
    noise = rng.randn(sampler.noise.shape, rng.generator(5), "cpu")
    assert torch.equal(got, model.predict_action(b["history"][:1], num_steps=6, noise=noise))
    # a sampler acting for a narrower robot (a policy at the pretrained action width) samples the
    # padding as zeros, as the model was trained, and is predict_action with that mask exactly
    narrow = ActionSampler(model, num_steps=6, action_dims=2)
    got = narrow(b["history"][:1], generator=rng.generator(5))
    assert (got[..., 2] == 0).all() and (got[..., :2] != 0).all()
    assert torch.equal(got, model.predict_action(b["history"][:1], num_steps=6, noise=noise, action_mask=mask[:1]))


def test_a_per_action_model_learns_actions_that_change_along_the_chunk(make_batch):
    """Trained on one fixed batch whose chunks ramp (each action different), the per-action
    model reproduces the ramp: the conditions tell the actions of a chunk apart."""
    model = per_action_model()
    b = make_batch(4)
    ramp = torch.linspace(-1, 1, model.cfg.action_horizon)
    b["actions"] = ramp.view(1, -1, 1).expand(4, -1, model.cfg.action_dim).clone()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(300):
        opt.zero_grad()
        loss_for(model, b, "policy", seed=step).backward()
        opt.step()
    model.eval()
    a = model.predict_action(b["history"], num_steps=32, generator=torch.Generator().manual_seed(0), temperature=0.0)
    err = (a - b["actions"]).abs().mean()
    assert err < 0.25, err


def test_the_action_head_takes_its_own_number_of_noise_draws(make_batch):
    """``action_batch_mul`` k: the action head trains on k noised copies of every chunk per step
    (the video head keeps ``diffusion_batch_mul``); 0 falls back to ``diffusion_batch_mul``."""
    from dataclasses import replace

    base = model_config("uva-tiny")
    rows = {}

    def count(name):
        def hook(module, args, out):
            rows[name] = rows.get(name, 0) + args[0].shape[0]
        return hook

    b = make_batch(3)
    for k in (0, 16):
        torch.manual_seed(0)
        model = UVA(replace(base, action_batch_mul=k))
        randomize_heads(model)
        rows.clear()
        model.action_head.register_forward_hook(count("action"))
        model.video_head.register_forward_hook(count("video"))
        loss_for(model, b, "joint")
        assert rows["action"] == 3 * (k or base.diffusion_batch_mul)
        sel = rows["video"] // base.diffusion_batch_mul
        assert rows["video"] == sel * base.diffusion_batch_mul and sel > 0

    with pytest.raises(ValueError, match="action_batch_mul"):
        model_config("uva-tiny", action_batch_mul=-1)
