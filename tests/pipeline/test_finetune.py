"""Fine-tuning: robot registry, adaptation to another action dimension, frozen backbone, stages,
export bundle + policy API (exact actions), closed loop in PushT, and the clear errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.robots import available_robots, check_stats, load_robot, normalize_actions, unnormalize_actions
from tests.conftest import cli
from tests.pipeline.test_data import make_set
from tests.pipeline.test_train import base_sets, run_train

ROOT = Path(__file__).resolve().parents[2]
WINDOW = "{num_history: 2, num_future: 2, frame_stride: 2, action_horizon: 4}"
# the test sets store one camera, "main": franka's exterior camera, without its wrist camera
ONE_CAMERA = ["--set", "cameras={exterior: main, wrist: null}"]


def finetune(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([cli("uva-finetune"), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def recipe(tmp: Path, stages: str) -> list[str]:
    return ["--set", f"train.data.window={WINDOW}", "--set", "train.data.num_workers=0",
            "--set", "train.data.shuffle_buffer=8", "--set", "train.micro_batch_size=4",
            "--set", "train.log_every=1", "--set", "train.checkpoint_every=100", "--set", f"stages={stages}",
            "--run-dir", str(tmp)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny VAE (8x8 frames -> 4x2x2 latents), shard sets of several robots encoded 'with' it,
    and a tiny model pretrained for 3 steps on 2-d actions."""
    from uva.vae import AutoencoderKL, VAEConfig, vae_identity
    from uva_io.vae_bundle import save_vae

    root = tmp_path_factory.mktemp("ft")
    torch.manual_seed(0)
    vae = AutoencoderKL(VAEConfig(ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=4, attn_resolutions=(),
                                  resolution=8, scale=1.0, num_groups=4))
    vae_path = save_vae(vae, root / "vae" / "tiny.safetensors")
    ident = vae_identity(vae)
    cfg = {"vae": str(vae_path)}
    make_set(root / "pre" / "robot", "arm", 4, 24, True, vae=ident, config=cfg)
    make_set(root / "pre" / "human", "human", 2, 24, False, vae=ident, config=cfg)
    make_set(root / "franka", "franka", 4, 24, True, vae=ident, action_dim=8, config=cfg, proprio_dim=8)
    make_set(root / "franka7", "franka", 2, 24, True, vae=ident, action_dim=7, config=cfg, proprio_dim=8)
    make_set(root / "franka_blind", "franka", 2, 24, True, vae=ident, action_dim=8, config=cfg)  # no proprio
    make_set(root / "pusht", "pusht", 4, 24, True, vae=ident, action_dim=2, config=cfg, proprio_dim=2)
    run = root / "pretrain"
    sets = base_sets(run, root / "pre") + ["total_steps=3", "checkpoint_every=3"]
    run_train(sets, 1, root / "losses")
    return {"root": root, "ckpt": run / "run" / "checkpoints", "vae": vae_path}


def test_robot_registry_and_normalization_round_trip():
    assert {"franka", "ur5", "aloha", "pusht"} <= set(available_robots())
    dims = {name: load_robot(name).action_dim for name in ("franka", "ur5", "aloha", "pusht")}
    assert dims == {"franka": 8, "ur5": 7, "aloha": 14, "pusht": 2}
    franka = load_robot("franka")
    assert franka.norm_mask() == [True] * 7 + [False]  # the gripper stays in its own units
    with pytest.raises(ValueError, match="unknown robot 'spot'.*registered robots: aloha, franka"):
        load_robot("spot")
    rng = np.random.default_rng(0)
    acts = rng.normal(3.0, 2.0, size=(50, 8))
    stats = {"mean": acts.mean(0).tolist(), "std": acts.std(0).tolist(),
             "q01": np.quantile(acts, 0.01, 0).tolist(), "q99": np.quantile(acts, 0.99, 0).tolist()}
    for mode in ("mean_std", "q01_q99"):
        norm = normalize_actions(acts, stats, mode, franka.norm_mask())
        np.testing.assert_array_equal(norm[:, 7], acts[:, 7])  # masked: untouched
        if mode == "mean_std":
            np.testing.assert_allclose(norm[:, :7].mean(0), 0, atol=1e-9)
        else:
            ends = normalize_actions(np.array([stats["q01"], stats["q99"]]), stats, mode)
            np.testing.assert_allclose(ends, [[-1] * 8, [1] * 8], atol=1e-9)
        np.testing.assert_allclose(unnormalize_actions(norm, stats, mode, franka.norm_mask()), acts, atol=1e-9)
    with pytest.raises(ValueError, match="actions are 7-d in the shards, but configs/robots/franka.yaml defines 8"):
        check_stats(franka, {"franka": {"dim": 7}}, "--data x")
    with pytest.raises(ValueError, match="no actions of robot 'franka'"):
        check_stats(franka, {"pusht": {"dim": 2}}, "--data x")


def test_a_recipe_window_is_fitted_to_the_pretrained_frame_layout():
    """The default recipe (4 future frames, stride 4, 16 actions) on a checkpoint predicting 2
    future frames: 16 actions cannot fit 8 stored frames, so the largest horizon that does (8) is
    used and the line says which setting changes it; a horizon that fits is kept."""
    from pipeline.data import WindowConfig
    from pipeline.finetune import fit_window

    w, note = fit_window(WindowConfig(4, 4, 4, 16), 2, 2)
    assert (w.num_history, w.num_future, w.frame_stride, w.action_horizon) == (2, 2, 4, 8)
    assert "action_horizon 16 does not fit, using 8" in note and "train.data.window.action_horizon" in note
    w.validate()
    w, note = fit_window(WindowConfig(4, 4, 4, 4), 2, 2)
    assert w.action_horizon == 4 and note == ""
    w, _ = fit_window(WindowConfig(2, 2, 3, 4), 2, 2)  # 6 stored frames: 2 or 6 fit, 2 is <= 4
    assert w.action_horizon == 2
    w, _ = fit_window(WindowConfig(2, 2, 1, 1), 2, 4)  # nothing up to 1 fits: the smallest that does
    assert w.action_horizon == 4
    w.validate()


@pytest.mark.slow
def test_finetune_franka_adapts_action_layers_keeps_backbone_and_exports(world, tmp_path):
    from safetensors.torch import load_file

    from pipeline.policy import load_policy
    from uva import UVA
    from uva.config import UVAConfig

    run = tmp_path / "ft"
    stages = "[{name: heads, steps: 2, lr: 1.0e-3, freeze: [backbone, video_head]}, {name: all, steps: 2, lr: 1.0e-3}]"
    proc = finetune(["--robot", "franka", "--pretrained", str(world["ckpt"]), "--data", str(world["root"] / "franka"),
                     *recipe(run, stages), *ONE_CAMERA])
    assert "new for this robot: action_head, embed.action_proj, embed.embodiment, embed.proprio" in proc.stdout
    pre = load_file(str(world["ckpt"] / "step_3" / "ema.safetensors"))
    heads = load_file(str(run / "stage0_heads" / "checkpoints" / "step_2" / "model.safetensors"))
    # the pretrained robots keep their rows (arm, human), franka gets a third
    assert json.loads((world["ckpt"] / "step_3" / "model_config.json").read_text())["embodiments"] == ["arm", "human"]
    table = heads["embed.embodiment.weight"]
    assert table.shape[0] == 3 and torch.allclose(table[:2], pre["embed.embodiment.weight"], atol=0.05)
    full = load_file(str(run / "stage1_all" / "checkpoints" / "step_2" / "model.safetensors"))
    backbone = [k for k in pre if k.startswith("backbone.")]
    assert backbone and all(torch.equal(pre[k], heads[k]) for k in backbone)  # frozen in stage 1: kept exactly
    assert any(not torch.equal(pre[k], full[k]) for k in backbone)  # trained in stage 2
    assert heads["embed.action_proj.weight"].shape[1] == 2 * 8 and pre["embed.action_proj.weight"].shape[1] == 2 * 2
    assert "embed.proprio.weight" not in pre and heads["embed.proprio.weight"].shape[1] == 2 * 8  # 2 frames x 8
    video = [k for k in pre if k.startswith("video_head.")]
    assert video and all(torch.equal(pre[k], heads[k]) for k in video)  # kept, not re-created
    # the bundle: safetensors + JSON, and it reproduces the trained model's actions exactly
    bundle = run / "export"
    meta = json.loads((bundle / "policy.json").read_text())
    assert meta["robot"]["name"] == "franka" and meta["action_dim"] == 8 and meta["norm_mask"][-1] is False
    assert meta["model_config"]["proprio_dim"] == 8 and meta["proprio_stats"]["dim"] == 8
    assert sorted(p.name for p in bundle.iterdir()) == ["model.safetensors", "policy.json", "vae.json", "vae.safetensors"]
    step = run / "stage1_all" / "checkpoints" / "step_2"
    model = UVA(UVAConfig(**json.loads((step / "model_config.json").read_text())))
    model.load_state_dict(load_file(str(step / "ema.safetensors")))
    model.eval()
    policy = load_policy(bundle)
    assert policy.embodiment_id == 2  # franka's row
    emb = torch.tensor([2])
    hist, state = torch.randn(1, 2, 4, 2, 2), torch.randn(1, 2, 8)
    want = model.predict_action(hist, num_steps=16, proprio=state, generator=torch.Generator().manual_seed(7),
                                embodiment=emb)
    got = policy.predict_normalized(hist, torch.Generator().manual_seed(7), state)
    np.testing.assert_array_equal(got, want[0].numpy())
    # a sampling temperature reaches the model (0: no noise after the initial draw)
    cold = load_policy(bundle, temperature=0.0)
    want = model.predict_action(hist, num_steps=16, proprio=state, generator=torch.Generator().manual_seed(7),
                                temperature=0.0, embodiment=emb)
    np.testing.assert_array_equal(cold.predict_normalized(hist, torch.Generator().manual_seed(7), state), want[0].numpy())
    assert not np.allclose(want[0].numpy(), got)
    with pytest.raises(ValueError, match="temperature >= 0"):
        load_policy(bundle, temperature=-1.0)
    # the static path (what a GPU records in a CUDA graph), run eagerly: the same model call with
    # every step's noise drawn first; the latents' VAE precision travels with the bundle
    from uva import rng

    static = load_policy(bundle, backend="eager")
    noise = rng.randn(static.sampler.noise.shape, rng.generator(7), "cpu")
    want = model.predict_action(hist, num_steps=16, proprio=state, noise=noise, embodiment=emb)
    np.testing.assert_array_equal(static.predict_normalized(hist, rng.generator(7), state), want[0].numpy())
    assert meta["vae"]["precision"] == "fp32" and static.vae_precision == "fp32"
    with pytest.raises(ValueError, match="backend"):
        load_policy(bundle, backend="fast")
    frames = np.random.default_rng(0).integers(0, 255, size=(2, 8, 8, 3), dtype=np.uint8)
    robot_state = np.arange(16, dtype=np.float32).reshape(2, 8)
    with pytest.raises(ValueError, match="this policy takes proprioception"):
        policy.predict(frames)
    acts = policy.predict(frames, robot_state, generator=torch.Generator().manual_seed(3))
    stats = json.loads((world["root"] / "franka" / "stats.json").read_text())["franka"]
    state = torch.from_numpy(normalize_actions(robot_state, stats["proprio"], "q01_q99").astype(np.float32))[None]
    norm = policy.predict_normalized(policy.encode(frames), torch.Generator().manual_seed(3), state)
    assert acts.shape == (4, 8)  # action_horizon 4, one per control step
    # in robot units, bounded by the data's range widened by 10% (the franka YAML declares no limits)
    lim = meta["action_limits"]
    raw = unnormalize_actions(norm, stats, "q01_q99", [True] * 7 + [False])
    np.testing.assert_allclose(acts, np.clip(raw, lim["low"], lim["high"]), rtol=1e-6)
    assert policy.clipped == int((np.clip(raw, lim["low"], lim["high"]) != raw).sum())
    # MLflow: one experiment, a run per stage
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    exp = client.get_experiment_by_name("uva-finetune-franka")
    assert len(client.search_runs([exp.experiment_id])) == 2
    # rerun: both stages are complete, nothing retrains, the bundle is rewritten
    again = finetune(["--robot", "franka", "--pretrained", str(world["ckpt"]), "--data", str(world["root"] / "franka"),
                      *recipe(run, stages), *ONE_CAMERA])
    assert again.stdout.count("already complete") == 2


@pytest.mark.slow
def test_finetune_pusht_and_closed_loop_in_the_runner(world, tmp_path):
    import functools

    from pipeline.policy import load_policy
    from uva_sim.pusht.runner import evaluate_policy

    run = tmp_path / "ft"
    proc = finetune(["--robot", "pusht", "--pretrained", str(world["ckpt"]), "--data", str(world["root"] / "pusht"),
                     *recipe(run, "[{name: full, steps: 2, lr: 1.0e-3}]")])
    # same action layout: the pretrained action head is kept; the proprioception input and the
    # robot's embodiment row (pusht was not in the pretraining mix) are new
    assert "new for this robot: embed.embodiment, embed.proprio\n" in proc.stdout
    res = evaluate_policy(functools.partial(load_policy, run / "export"), [100000], workers=1, max_steps=12, log=None)
    assert res["num_episodes"] == 1 and res["episodes"][0]["steps"] == 12
    # uva-eval replans halfway through a bundle's chunk by default
    from pipeline.sim_eval import default_action_steps

    w = json.loads((run / "export" / "policy.json").read_text())["window"]
    assert default_action_steps(str(run / "export")) == w["num_future"] * w["frame_stride"] // 2
    assert default_action_steps("expert") == 8
    # and through the exported bundle's own folder as a pretrained checkpoint (fine-tune again)
    proc = finetune(["--robot", "pusht", "--pretrained", str(run / "export"), "--data", str(world["root"] / "pusht"),
                     *recipe(tmp_path / "ft2", "[{name: full, steps: 1, lr: 1.0e-3}]")])
    assert (tmp_path / "ft2" / "export" / "policy.json").is_file()


def test_finetune_bad_inputs_are_named(world, tmp_path):
    data, ck = str(world["root"] / "franka"), str(world["ckpt"])
    cases = [
        (["--robot", "spot", "--pretrained", ck, "--data", data], "unknown robot 'spot'"),
        (["--robot", "franka", "--pretrained", ck, "--data", str(world["root"] / "franka7")],
         "franka' actions are 7-d in the shards, but configs/robots/franka.yaml defines 8"),
        (["--robot", "franka", "--pretrained", ck, "--data", str(world["root"] / "pusht")],
         "no actions of robot 'franka'"),
        (["--robot", "franka", "--pretrained", ck, "--data", str(world["root"] / "franka_blind")],
         "no proprioception statistics for robot 'franka'"),
        (["--robot", "franka", "--pretrained", ck, "--data", data, "--set", "model_size=uva-B"],
         "is a uva-tiny model (width 32, depth 2+2), but this recipe is for uva-B"),
        (["--robot", "franka", "--pretrained", str(tmp_path / "missing"), "--data", data], "--pretrained"),
    ]
    for args, message in cases:
        proc = finetune(args + ["--run-dir", str(tmp_path / "x")], check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr[-2000:])
    # without proprioception on request (use_proprio: false) the same shards plan fine
    from pipeline.finetune import FinetuneConfig, plan
    from uva_io.config import load_config

    cfg = load_config(FinetuneConfig, ROOT / "configs/finetune/default.yaml", [f"train.data.window={WINDOW}"])
    cfg = replace(cfg, cameras={"exterior": "main", "wrist": None})  # the test sets' one camera
    stages, _ = plan(replace(cfg, use_proprio=False), "franka", ck, [str(world["root"] / "franka_blind")])
    assert stages[0].data.proprio_dim == 0
    stages, info = plan(cfg, "franka", ck, [data])
    assert stages[0].data.proprio_dim == 8 and info["proprio_stats"]["dim"] == 8
    # bare weights of another layout (no model_config.json beside them): refused when loading
    bare = tmp_path / "bare" / "weights.safetensors"
    bare.parent.mkdir()
    shutil.copy(world["ckpt"] / "step_3" / "ema.safetensors", bare)
    proc = finetune(["--robot", "franka", "--pretrained", str(bare), "--data", data,
                     *recipe(tmp_path / "y", "[{name: full, steps: 1, lr: 1.0e-3}]"), *ONE_CAMERA], check=False)
    assert proc.returncode == 2 and "is from a different model size or layout" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_a_mix_of_robots_and_cameras_pretrains_and_fine_tunes_to_a_two_camera_robot(world, tmp_path):
    """Pretraining on a 2-d one-camera robot, a two-camera 8-d franka and human video with two
    views and 8-d actions; fine-tuning to franka keeps its embodiment row and both views; the
    policy takes {camera: frames}, and a missing camera is an absent view, not an error."""
    from safetensors.torch import load_file

    from pipeline.policy import load_policy
    from uva.vae import vae_identity
    from uva_io.vae_bundle import load_vae

    root = world["root"]
    ident = vae_identity(load_vae(world["vae"]))
    make_set(tmp_path / "franka2", "franka", 4, 24, True, vae=ident, action_dim=8, config={"vae": str(world["vae"])},
             cameras=("exterior", "wrist"), instructions=["open the drawer", "close the drawer", "", "open the drawer"])
    run = tmp_path / "pre"
    sets = ["model.size=uva-tiny", "model.overrides={latent_channels: 4, latent_size: 2, width: 32, decoder_width: 32}",
            f"data.sources=[{{path: {root / 'pre' / 'robot'}, weight: 1}}, {{path: {tmp_path / 'franka2'}, weight: 1, "
            f"cameras: [exterior, wrist]}}, {{path: {root / 'pre' / 'human'}}}]",
            f"data.window={WINDOW}", "data.action_dim=8", "data.num_views=2", "data.num_workers=0",
            "data.shuffle_buffer=8", "micro_batch_size=4", "total_steps=3", "checkpoint_every=3", f"run_dir={run}"]
    run_train(sets, 1, tmp_path / "losses")
    arch = json.loads((run / "checkpoints" / "step_3" / "model_config.json").read_text())
    assert arch["embodiments"] == ["arm", "franka", "human"] and arch["num_views"] == 2
    # the franka set's instructions: the model takes their tokens (4 x 32, the set's encoder)
    assert (arch["lang_dim"], arch["lang_tokens"], arch["text_encoder"]["identity"]) == (32, 4, "hash-v2-32")
    # a one-camera robot from this two-view model: one view (the checkpoint is fitted, not refused)
    from pipeline.finetune import FinetuneConfig, StageConfig, plan

    one_cam, _ = plan(FinetuneConfig(stages=[StageConfig("all", 1, 1e-3)], run_dir=str(tmp_path / "p")), "pusht",
                      str(run / "checkpoints"), [str(root / "pusht")])
    assert one_cam[0].model.overrides["num_views"] == 1 and one_cam[0].data.num_views == 1
    assert one_cam[0].data.sources[0].camera == "main"
    ft = tmp_path / "ft"
    proc = finetune(["--robot", "franka", "--pretrained", str(run / "checkpoints"), "--data", str(tmp_path / "franka2"),
                     *recipe(ft, "[{name: all, steps: 2, lr: 1.0e-3}]"), "--set", "use_proprio=false"])
    assert "embed.embodiment" not in proc.stdout.split("new for this robot:")[-1].split("\n")[0]  # franka was seen
    pre = load_file(str(run / "checkpoints" / "step_3" / "ema.safetensors"))
    assert pre["embed.embodiment.weight"].shape[0] == 3
    policy = load_policy(ft / "export")
    assert policy.cameras == ["exterior", "wrist"] and policy.embodiment_id == 1
    frames = np.random.default_rng(0).integers(0, 255, size=(2, 8, 8, 3), dtype=np.uint8)
    both = policy.predict({"exterior": frames, "wrist": frames[::-1]}, generator=torch.Generator().manual_seed(1))
    one = policy.predict({"exterior": frames}, generator=torch.Generator().manual_seed(1))
    assert both.shape == one.shape == (4, 8) and not np.array_equal(both, one)
    # a missing camera is an absent view: masked out, so whatever sits in its slot is not seen
    h_one, m_one = policy.encode_views({"exterior": frames})
    h_both, m_both = policy.encode_views({"exterior": frames, "wrist": frames[::-1]})
    assert m_one.tolist() == [[True, False]] and m_both.tolist() == [[True, True]]
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    lang = {t: policy.predict({"exterior": frames}, generator=torch.Generator().manual_seed(1), instruction=t)
            for t in ("open the drawer", "close the drawer")}
    np.testing.assert_array_equal(lang["open the drawer"], policy.predict(
        {"exterior": frames}, generator=torch.Generator().manual_seed(1), instruction="open the drawer"))
    assert not np.array_equal(lang["open the drawer"], lang["close the drawer"])
    assert not np.array_equal(lang["open the drawer"], one)  # `one`: no instruction
    np.testing.assert_array_equal(policy.predict_normalized(h_both, g(), view_mask=m_one),
                                  policy.predict_normalized(h_one, g(), view_mask=m_one))
    with pytest.raises(ValueError, match="sees 2 cameras"):
        policy.predict(frames)
    with pytest.raises(ValueError, match=r"cameras \['top'\] are not this policy's"):
        policy.predict({"top": frames})


def test_a_recipe_sets_how_the_model_trains_but_not_its_architecture(world):
    from pipeline.finetune import FinetuneConfig, StageConfig, plan
    from pipeline.train_config import ModelSection, TrainConfig

    def stages(overrides):
        cfg = FinetuneConfig(train=TrainConfig(model=ModelSection(overrides=overrides)),
                             stages=[StageConfig("all", 1, 1e-3)], run_dir=str(world["root"] / "plan"))
        return plan(cfg, "pusht", str(world["ckpt"]), [str(world["root"] / "pusht")])[0]

    got = stages({"dropout": 0.1, "mask_kind": "tube"})[0].model.overrides
    assert (got["dropout"], got["mask_kind"], got["width"]) == (0.1, "tube", 32)
    with pytest.raises(ValueError, match=r"train.model.overrides \['width'\]: the architecture comes from --pretrained"):
        stages({"width": 64})


def test_each_stage_draws_its_own_data_and_noise_and_the_experiment_is_the_recipes(world):
    """At a stage boundary the next stage must not replay the stage before batch for batch (same
    windows, masks, modes and noise from the same seeds); the MLflow experiment is the recipe's
    when it names one (also 'uva-pretrain'), else uva-finetune-<robot>."""
    from pipeline.finetune import FinetuneConfig, StageConfig, plan

    def stages(**kw):
        cfg = FinetuneConfig(stages=[StageConfig("heads", 2, 1e-3, freeze=["backbone"]), StageConfig("all", 2, 1e-4)],
                             run_dir=str(world["root"] / "plan2"), **kw)
        return plan(cfg, "pusht", str(world["ckpt"]), [str(world["root"] / "pusht")])[0]

    a, b = stages()
    assert a.seed != b.seed and a.data.seed != b.data.seed
    assert a.experiment == b.experiment == "uva-finetune-pusht"
    assert {s.experiment for s in stages(experiment="uva-pretrain")} == {"uva-pretrain"}


@pytest.mark.slow
def test_from_scratch_trains_the_pretrained_architecture_from_fresh_weights(world, tmp_path):
    """--from-scratch: the control run of a pretraining-benefit measurement. The model has the
    checkpoint's architecture and the recipe's stages, but none of its weights: a backbone frozen
    in the first stage is the fresh init, not the pretrained one; the bundle says so."""
    from safetensors.torch import load_file

    pre = load_file(str(world["ckpt"] / "step_3" / "ema.safetensors"))
    stages = "[{name: heads, steps: 1, lr: 1.0e-3, freeze: [backbone]}]"
    runs = {}
    for name, extra in (("pretrained", []), ("scratch", ["--from-scratch"])):
        run = tmp_path / name
        proc = finetune(["--robot", "pusht", "--pretrained", str(world["ckpt"]), "--data", str(world["root"] / "pusht"),
                         *recipe(run, stages), *extra])
        runs[name] = load_file(str(run / "stage0_heads" / "checkpoints" / "step_1" / "model.safetensors"))
        arch = json.loads((run / "stage0_heads" / "checkpoints" / "step_1" / "model_config.json").read_text())
        meta = json.loads((run / "export" / "policy.json").read_text())
        assert arch["width"] == json.loads((world["ckpt"] / "step_3" / "model_config.json").read_text())["width"]
        if name == "scratch":
            assert "from scratch: the architecture of" in proc.stdout and "initialized from" not in proc.stdout
            assert meta["source"]["pretrained"] == "none (from scratch)"
    backbone = [k for k in pre if k.startswith("backbone.")]
    assert all(torch.equal(pre[k], runs["pretrained"][k]) for k in backbone)
    matrices = [k for k in backbone if pre[k].ndim >= 2]
    assert matrices and all(not torch.equal(pre[k], runs["scratch"][k]) for k in matrices)
    assert runs["pretrained"].keys() == runs["scratch"].keys()


def test_an_action_head_stage_fits_the_head_alone_on_cached_conditions_and_exports_it(world, tmp_path):
    """A joint stage, then the action head alone on the cached policy conditions: the stage's
    checkpoint keeps every other weight of the joint stage, its head is new and what the bundle
    ships; the held-out head loss is reported; a rerun skips both stages."""
    from safetensors.torch import load_file

    run, data = tmp_path / "ft", str(world["root"] / "pusht")
    stages = ("[{name: all, steps: 2, lr: 1.0e-3}, "
              "{name: head, kind: action_head, steps: 40, lr: 1.0e-3, warmup_steps: 5, batch_size: 16}]")
    args = ["--robot", "pusht", "--pretrained", str(world["ckpt"]), "--data", data, "--eval-data", data,
            *recipe(run, stages)]
    proc = finetune(args)
    assert "the action head alone on cached conditions, batch 16" in proc.stdout
    assert "[head] conditions of" in proc.stdout and "held-out" in proc.stdout
    losses = re.search(r"\[head\] head loss train ([\d.]+) -> ([\d.]+), heldout ([\d.]+) -> ([\d.]+)", proc.stdout)
    assert losses, proc.stdout[-2000:]
    tr0, tr1 = float(losses.group(1)), float(losses.group(2))
    assert tr1 < tr0  # the head learned something on the cached conditions
    joint = load_file(str(run / "stage0_all" / "checkpoints" / "step_2" / "ema.safetensors"))
    step = run / "stage1_head" / "checkpoints" / "step_40"
    assert (step / "COMPLETE").is_file() and (step / "model_config.json").is_file()
    head = load_file(str(step / "ema.safetensors"))
    shipped = load_file(str(run / "export" / "model.safetensors"))
    assert head.keys() == joint.keys() == shipped.keys()
    assert all(torch.equal(head[k], joint[k]) for k in joint if not k.startswith("action_head."))
    assert any(not torch.equal(head[k], joint[k]) for k in joint if k.startswith("action_head."))
    assert all(torch.equal(head[k], shipped[k]) for k in head)
    meta = json.loads((run / "export" / "policy.json").read_text())
    assert meta["source"]["checkpoint"].endswith("stage1_head/checkpoints/step_40")
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    exp = client.get_experiment_by_name("uva-finetune-pusht")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and any("head/heldout_loss" in r.data.metrics for r in runs)
    again = finetune(args)
    assert again.stdout.count("already complete") == 2
    # a stage kind that does not exist, and a frozen prefix in a stage that trains the head alone
    for bad, message in (("{name: x, kind: head_only, steps: 1, lr: 1.0e-3}", "kind must be one of joint, action_head"),
                         ("{name: x, kind: action_head, steps: 1, lr: 1.0e-3, freeze: [backbone]}",
                          "freeze has no meaning there")):
        proc = finetune(["--robot", "pusht", "--pretrained", str(world["ckpt"]), "--data", data,
                         *recipe(tmp_path / "bad", f"[{bad}]")], check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_relative_actions_fine_tune_and_a_policy_that_adds_the_state_back(world, tmp_path):
    """relative_actions: the recipe trains chunks measured from the robot's state; the bundle
    records the origin and the chunks' statistics, and the policy returns the sampled offsets
    plus the state at the last history frame. A robot that relates no action to a state, or a
    recipe without proprioception, is refused before training."""
    from pipeline.policy import load_policy
    from pipeline.robots import chunk_origin

    run = tmp_path / "rel"
    stages = "[{name: all, steps: 2, lr: 1.0e-3}]"
    data = str(world["root"] / "pusht")
    finetune(["--robot", "pusht", "--pretrained", str(world["ckpt"]), "--data", data, *recipe(run, stages),
              "--set", "relative_actions=true"])
    meta = json.loads((run / "export" / "policy.json").read_text())
    assert meta["relative"]["origin"] == [0, 1] and meta["relative"]["stats"]["dim"] == 2
    absolute = json.loads((world["root"] / "pusht" / "stats.json").read_text())["pusht"]
    assert meta["relative"]["stats"]["q99"] != absolute["q99"]  # the chunks' own statistics
    policy = load_policy(run / "export")
    frames = np.random.default_rng(0).integers(0, 255, size=(2, 8, 8, 3), dtype=np.uint8)
    state = np.array([[100.0, 200.0], [110.0, 220.0]], np.float32)
    norm = policy.predict_normalized(policy.encode(frames), torch.Generator().manual_seed(3),
                                     policy.normalize_proprio(state))
    got = policy.predict(frames, state, generator=torch.Generator().manual_seed(3))
    offsets = unnormalize_actions(norm, meta["relative"]["stats"], "q01_q99")
    lim = meta["action_limits"]  # absolute targets, within the data's range widened by 10%
    np.testing.assert_allclose(got, np.clip(offsets + chunk_origin(state[-1:], [0, 1]), lim["low"], lim["high"]),
                               rtol=1e-6)
    # refused: a robot whose YAML relates nothing (a copy of pusht without relative_to), no proprio
    plain = tmp_path / "pusht.yaml"
    plain.write_text((ROOT / "configs" / "robots" / "pusht.yaml").read_text().split("# relative chunks")[0])
    proc = finetune(["--robot", str(plain), "--pretrained", str(world["ckpt"]), "--data", data,
                     *recipe(tmp_path / "no", stages), "--set", "relative_actions=true"], check=False)
    assert proc.returncode == 2 and "relates no action to its proprioception" in proc.stderr
    proc = finetune(["--robot", "pusht", "--pretrained", str(world["ckpt"]), "--data", data,
                     *recipe(tmp_path / "np", stages), "--set", "relative_actions=true", "--set", "use_proprio=false"],
                    check=False)
    assert proc.returncode == 2 and "use_proprio: true" in proc.stderr


def test_a_50_hz_and_a_15_hz_robot_train_in_one_mix_and_the_50_hz_policy_returns_50_hz_rows(world, tmp_path):
    from pipeline.policy import load_policy
    from uva_io.shardset import load_index

    root, cfg = world["root"], {"vae": str(world["vae"])}
    ident = load_index(root / "franka")["vae"]
    fast = make_set(tmp_path / "fast", "fast50", 3, 24, True, vae=ident, config=cfg, action_dim=3, control_hz=50)
    slow = make_set(tmp_path / "slow", "slow15", 3, 24, True, vae=ident, config=cfg, action_dim=2, control_hz=15)
    # one mix: the width follows its widest robot (3), each robot's chunk in its own rows
    sets = ["model.size=uva-tiny", "model.overrides={latent_channels: 4, latent_size: 2, width: 32, decoder_width: 32}",
            f"data.sources=[{{path: {fast}}}, {{path: {slow}}}]", f"data.window={WINDOW}", "data.num_workers=0",
            "data.shuffle_buffer=8", "micro_batch_size=4", "log_every=1", "total_steps=2", "checkpoint_every=2",
            f"run_dir={tmp_path / 'pre'}"]
    run_train(sets, 1, tmp_path / "losses")
    arch = json.loads((tmp_path / "pre" / "checkpoints" / "step_2" / "model_config.json").read_text())
    assert arch["action_dim"] == 3 and arch["embodiments"] == ["fast50", "slow15"]
    losses = json.loads(Path(f"{tmp_path / 'losses'}.rank0").read_text())["losses"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    robot = tmp_path / "fast50.yaml"
    robot.write_text("name: fast50\naction_names: [a, b, c]\ncontrol_hz: 50\ncameras: [main]\n")
    run = tmp_path / "ft"
    # frame_stride 4: a chunk spread over the future frames (the old layout) would repeat each action twice
    finetune(["--robot", str(robot), "--pretrained", str(tmp_path / "pre" / "checkpoints"), "--data", str(fast),
              *recipe(run, "[{name: all, steps: 2, lr: 1.0e-3}]"),
              "--set", "train.data.window={num_history: 2, num_future: 2, frame_stride: 4, action_horizon: 4}"])
    meta = json.loads((run / "export" / "policy.json").read_text())
    assert meta["time_base"] == "control_rows" and meta["control_hz"] == 50
    policy = load_policy(run / "export")
    chunk = policy.predict(np.zeros((2, 8, 8, 3), np.uint8))
    assert chunk.shape == (4, 3) and policy.control_hz == 50  # one 50 Hz row per action
    bad = tmp_path / "fast40.yaml"
    bad.write_text("name: fast50\naction_names: [a, b, c]\ncontrol_hz: 40\ncameras: [main]\n")
    proc = finetune(["--robot", str(bad), "--pretrained", str(tmp_path / "pre" / "checkpoints"), "--data", str(fast),
                     *recipe(tmp_path / "ft40", "[{name: all, steps: 1, lr: 1.0e-3}]")], check=False)
    assert proc.returncode == 2 and "control_hz 40 (its YAML), but --data" in proc.stderr
