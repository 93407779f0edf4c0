"""uva-import: MAR's and the UVA reference's checkpoints, and the allow-list they are read through.

The fixtures were written by the other projects' own code (scripts/make_mar_fixture.py,
scripts/make_reference_fixtures.py name the commits); the reference's outputs beside its
checkpoint were computed by its own code from the same weights.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.import_weights import import_mar, import_reference, main
from uva import UVA
from uva.config import UVAConfig, model_config
from uva_io.safe_load import UnsafeCheckpoint, load_checkpoint, plain

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REFERENCE = FIXTURES / "reference" / "uva_pusht_small.ckpt"
MAR = FIXTURES / "mar" / "checkpoint-last.pth"
TOL = 1e-4
MAR_LAYOUT = {"embed_style": "streams", "embed_norm": True, "mlp_act": "gelu", "action_pos": True}


@pytest.fixture(scope="module")
def outputs():
    return load_file(str(FIXTURES / "reference" / "outputs.safetensors"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "bundle"
    report = import_reference(REFERENCE, out, num_heads=2)
    return out, report


@pytest.fixture(scope="module")
def model(bundle):
    meta = json.loads((bundle[0] / "policy.json").read_text())
    m = UVA(UVAConfig(**meta["model_config"]))
    m.load_state_dict(load_file(str(bundle[0] / "model.safetensors")))
    return m.eval()


def test_decoder_features_equal_the_references_in_every_task_mode(model, outputs):
    o, b = outputs, outputs["cond"].shape[0]
    with torch.no_grad():
        for mode in ("policy_model", "video_model", "dynamic_model", "inverse_model"):
            mask = o[f"mask_{mode}"].reshape(b, -1).bool()
            dynamic = mode == "dynamic_model"
            hidden = torch.zeros(b, dtype=torch.bool) if mode == "inverse_model" else None
            video, action = model.features(o["cond"], o["future"], mask, o["actions"] if dynamic else None,
                                           torch.full((b,), dynamic), history_visible=hidden)
            assert (video - o[f"z_{mode}"]).abs().max() < TOL, mode
            if dynamic:  # the condition the reference's action sampler computes from these features
                assert (action - o["action_cond"]).abs().max() < TOL
    # the inverse model hides the history, as the reference's does
    assert not model.cfg.inverse_sees_history


def test_each_diffusion_network_equals_the_references(model, outputs):
    o = outputs
    with torch.no_grad():
        video = model.video_head(o["video_x"], o["video_t"], o["video_c"])
        action = model.action_head(o["action_x"], o["action_t"], o["action_cond"].reshape(-1, model.cfg.decoder_width))
    assert (video - o["video_out"]).abs().max() < TOL
    assert (action - o["action_out"]).abs().max() < TOL
    assert o["video_out"].abs().max() > 0.1 and o["action_out"].abs().max() > 0.1  # not a zero-output check


def test_a_whole_policy_call_equals_the_references_with_the_same_draws(bundle, outputs):
    from pipeline.policy import load_policy

    policy = load_policy(bundle[0])
    assert policy.sampling_steps == 100 and policy.temperature == pytest.approx(0.95)
    frames = outputs["obs_frames"][0].permute(0, 2, 3, 1).numpy()  # the reference's 16 observation frames
    steps = policy.sampling_steps
    noise = outputs["policy_noise"][:steps].reshape(steps, 1, -1)  # its start and each step's draw
    # the policy reads every frame_stride-th of the last num_obs frames: the reference's [3, 7, 11, 15]
    actions = policy.predict(frames[3::4], noise=noise)
    want = outputs["policy_action_pred"][0].numpy()
    assert actions.shape == want.shape == (16, 2)
    stats = policy.stats
    norm = lambda a: a * np.asarray(stats["scale"]) + np.asarray(stats["offset"])  # noqa: E731
    assert np.abs(norm(actions) - norm(want)).max() < TOL  # model units
    assert np.abs(actions - want).max() < TOL * np.abs(want).max()  # robot units (pixels), relative
    # other draws give other actions: the comparison is not vacuous
    other = policy.predict(frames[3::4], noise=torch.randn_like(noise))
    assert np.abs(other - want).max() > 1.0


def test_the_import_takes_the_ema_weights_and_reports_what_it_did(bundle, tmp_path):
    out, report = bundle
    assert report["weights"] == "ema_model" and not report["dropped"]
    assert any("fake_latent_x -> embed.mask_token" in m for m in report["mapped"])
    assert any("attention dropout" in n for n in report["notes"])
    assert (out / "import_report.json").is_file()
    meta = json.loads((out / "policy.json").read_text())
    assert meta["observation"]["resize"] == "stretch_bilinear" and meta["normalization"] == "affine"
    raw = tmp_path / "raw"
    assert import_reference(REFERENCE, raw, ema=False, num_heads=2)["weights"] == "model"
    a, b = load_file(str(out / "model.safetensors")), load_file(str(raw / "model.safetensors"))
    assert not torch.equal(a["embed.fuse.weight"], b["embed.fuse.weight"])


def test_the_import_is_deterministic(bundle, tmp_path):
    again = tmp_path / "again"
    import_reference(REFERENCE, again, num_heads=2)
    for name in ("model.safetensors", "vae.safetensors"):
        assert (again / name).read_bytes() == (bundle[0] / name).read_bytes()


def test_an_unknown_model_size_asks_for_the_head_count(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["reference", str(REFERENCE), "--output", str(tmp_path / "b")])
    assert e.value.code == 2 and "--num-heads" in capsys.readouterr().err


def test_the_workspace_cfg_is_read_as_plain_data_and_dill_payloads_stay_bytes():
    payload = load_checkpoint(REFERENCE)
    cfg = plain(payload["cfg"])
    assert cfg["model"]["policy"]["shape_meta"]["action"]["shape"] == [2]  # ${task.shape_meta} resolved
    assert isinstance(payload["pickles"]["_output_dir"], bytes)  # the dill payload is never unpickled


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch " + str(Path(os.environ["UVA_EVIL_MARKER"])),))


@pytest.mark.parametrize("where", ["args", "cfg"])
def test_a_checkpoint_that_names_code_is_refused_and_nothing_runs(tmp_path, monkeypatch, capsys, where):
    marker = tmp_path / "ran"
    monkeypatch.setenv("UVA_EVIL_MARKER", str(marker))
    evil = tmp_path / "evil.pth"
    good = load_checkpoint(MAR)
    payload = {**good, "args": _Evil()} if where == "args" else {"cfg": _Evil(), "state_dicts": {}, "pickles": {}}
    torch.save(payload, evil)
    with pytest.raises(UnsafeCheckpoint, match=r"(posix|os|nt)\.system.*not on the allow-list"):
        load_checkpoint(evil)
    assert not marker.exists()
    kind = "mar" if where == "args" else "reference"
    extra = ["--size", "uva-tiny"] if kind == "mar" else []
    with pytest.raises(SystemExit) as e:
        main([kind, str(evil), "--output", str(tmp_path / "out.safetensors"), *extra])
    assert e.value.code == 2 and "system" in capsys.readouterr().err
    assert not marker.exists()
    # a plain pickle (not a torch zip) naming code is refused too
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps({"model": _Evil()}))
    with pytest.raises((UnsafeCheckpoint, ValueError)):
        load_checkpoint(raw)
    assert not marker.exists()


def test_mar_weights_map_into_the_model_and_load_as_an_initialization(tmp_path):
    from pipeline.weights import imported_from, load_partial

    out = tmp_path / "mar_init.safetensors"
    report = import_mar(MAR, "uva-tiny", out, MAR_LAYOUT)
    mar = load_checkpoint(MAR)
    ema, raw = mar["model_ema"], mar["model"]
    state = load_file(str(out))
    assert imported_from(out) == "mar" and report["weights"] == "model_ema"
    # blocks, norms, the video head: MAR's EMA tensors under this project's names
    pairs = {"backbone.encoder.blocks.1.mlp.0.weight": "encoder_blocks.1.mlp.fc1.weight",
             "backbone.decoder.blocks.0.attn.qkv.bias": "decoder_blocks.0.attn.qkv.bias",
             "backbone.decoder_embed.weight": "decoder_embed.weight", "embed.norm.weight": "z_proj_ln.weight",
             "embed.z_proj.weight": "z_proj.weight", "video_head.blocks.1.ada.1.weight":
                 "diffloss.net.res_blocks.1.adaLN_modulation.1.weight",
             "video_head.out.bias": "diffloss.net.final_layer.linear.bias"}
    for ours, theirs in pairs.items():
        assert torch.equal(state[ours], ema[theirs].float()), ours
        assert not torch.equal(state[ours], raw[theirs].float())
    # MAR's 4 x 4 grid resized to uva-tiny's 8 x 8, said in the report
    assert state["embed.space_pos"].shape == (1, 1, 64, 32)
    assert any("embed.space_pos" in r for r in report["resized"])
    assert any(r.startswith("class_emb") for r in report["dropped"]) and "embed.fuse.weight" in report["new"]
    assert json.loads(out.with_suffix(".json").read_text())["new"] == report["new"]
    cfg = model_config("uva-tiny", **MAR_LAYOUT)
    model = UVA(cfg)
    fresh = load_partial(model, state, out)
    assert set(fresh) == set(report["new"])
    assert torch.equal(model.state_dict()["backbone.encoder.blocks.0.attn.qkv.weight"],
                       ema["encoder_blocks.0.attn.qkv.weight"].float())
    with pytest.raises(ValueError, match="another layout"):  # a model of other settings is told so
        load_partial(UVA(model_config("uva-tiny", **{**MAR_LAYOUT, "latent_size": 4})), state, out)
    assert import_mar(MAR, "uva-tiny", tmp_path / "raw.safetensors", MAR_LAYOUT, ema=False)["weights"] == "model"
    with pytest.raises(ValueError, match="pick the size"):
        import_mar(MAR, "uva-S", tmp_path / "x.safetensors")


def test_a_pretraining_config_starts_from_the_imported_mar_weights(tmp_path):
    from pipeline.data import DataConfig, WindowConfig
    from pipeline.train import build_model
    from pipeline.train_config import ModelSection, TrainConfig

    out = tmp_path / "mar_init.safetensors"
    import_mar(MAR, "uva-tiny", out, MAR_LAYOUT)
    data = DataConfig(window=WindowConfig(num_history=2, num_future=2, frame_stride=1, action_horizon=4))
    cfg = TrainConfig(model=ModelSection("uva-tiny", dict(MAR_LAYOUT)), data=data, init_from=str(out),
                      run_dir=str(tmp_path / "run"))
    model, _ = build_model(cfg, rank=0)
    assert torch.equal(model.state_dict()["backbone.decoder.blocks.1.norm2.weight"],
                       load_checkpoint(MAR)["model_ema"]["decoder_blocks.1.norm2.weight"].float())


def test_uva_eval_runs_an_imported_reference_bundle(bundle, tmp_path):
    from pipeline.sim_eval import main as eval_main

    eval_main(["--env", "pusht", "--policy", str(bundle[0]), "--seeds", "100000:100001", "--max-steps", "16",
               "--workers", "1", "--no-videos", "--output", str(tmp_path / "eval")])
    result = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert result["num_episodes"] == 1 and result["action_steps"] == 8  # half the imported 16-action chunk


def test_a_policy_never_returns_an_action_outside_its_limits_and_counts_what_it_clips(bundle, outputs, tmp_path,
                                                                                     caplog):
    import shutil

    from pipeline.policy import load_policy

    meta = json.loads((bundle[0] / "policy.json").read_text())
    assert meta["action_limits"]["from"].startswith("the training data's range")  # the reference's min / max
    narrow = tmp_path / "narrow"
    shutil.copytree(bundle[0], narrow)
    meta["action_limits"] = {"low": [200.0, 200.0], "high": [300.0, 300.0], "from": "a test"}
    (narrow / "policy.json").write_text(json.dumps(meta))
    policy = load_policy(narrow)
    frames = outputs["obs_frames"][0].permute(0, 2, 3, 1).numpy()[3::4]
    free = load_policy(bundle[0]).predict(frames, noise=outputs["policy_noise"][:100].reshape(100, 1, -1))
    with caplog.at_level("WARNING", logger="uva.policy"):
        got = policy.predict(frames, noise=outputs["policy_noise"][:100].reshape(100, 1, -1))
    assert got.min() >= 200 and got.max() <= 300
    outside = int(((free < 200) | (free > 300)).sum())
    assert outside > 0 and policy.clipped == outside and "clipped" in caplog.text
