"""Training with real DeepSpeed (2 ranks, gloo, CPU), MLflow file store, checkpoints, exact resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cli
from tests.pipeline.test_data import make_set

ROOT = Path(__file__).resolve().parents[2]


def base_sets(tmp_path: Path, data: Path) -> list[str]:
    return ["model.size=uva-tiny", "model.overrides={latent_channels: 4, latent_size: 2, width: 32, decoder_width: 32}",
            f"data.sources=[{{path: {data / 'robot'}, weight: 3}}, {{path: {data / 'human'}, weight: 1}}]",
            "data.window={num_history: 2, num_future: 2, frame_stride: 2, action_horizon: 4}",
            "data.num_workers=0", "data.shuffle_buffer=8", "micro_batch_size=4", "optim.warmup_steps=2",
            "log_every=1", f"run_dir={tmp_path / 'run'}"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("latents")
    make_set(root / "robot", "arm", 4, 24, True)
    make_set(root / "human", "human", 2, 24, False)
    return root


def run_train(sets: list[str], nproc: int, out: Path, wait: bool = True, **kw):
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [cli("uva-pretrain")] + (["--nproc", str(nproc)] if nproc > 1 else [])
    cmd += [a for s in sets for a in ("--set", s)] + ["--losses-out", str(out)]
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_two_rank_deepspeed_zero(stage, data, tmp_path, monkeypatch):
    monkeypatch.setenv("UVA_PEAK_TFLOPS", "0.5")  # MFU is logged wherever a peak is known (GPU table)
    sets = base_sets(tmp_path, data) + [f"zero_stage={stage}", "total_steps=4", "checkpoint_every=2"]
    run_train(sets, 2, tmp_path / "losses")
    r0 = json.loads(Path(f"{tmp_path / 'losses'}.rank0").read_text())
    r1 = json.loads(Path(f"{tmp_path / 'losses'}.rank1").read_text())
    assert r0["step"] == r1["step"] == 4 and len(r0["losses"]) == 4
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*"))
    assert ckpts == ["step_2", "step_4"] and (tmp_path / "run" / "checkpoints" / "step_4" / "COMPLETE").is_file()
    assert r1["run_id"] is None  # only rank 0 talks to MLflow
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    run = client.get_run(r0["run_id"])
    assert run.data.params["zero_stage"] == str(stage)
    assert {"loss", "lr", "samples_per_s", "data_wait_frac"} <= set(run.data.metrics)
    assert len(client.get_metric_history(r0["run_id"], "loss")) == 4
    m = run.data.metrics
    assert 0 < m["mfu"] and m["mfu"] * 0.5 == pytest.approx(m["tflops_per_rank"], rel=1e-6)


@pytest.mark.slow
def test_preempt_checkpoint_resume_matches_uninterrupted(data, tmp_path):
    """The preemption signal reaches every process of the job (Slurm, ``timeout`` and
    ``kill -- -PGID`` signal the whole group), loader workers included: they leave it to the
    trainer, which checkpoints and exits 124; the rerun continues exactly."""
    ref = tmp_path / "ref"
    more = ["zero_stage=2", "total_steps=8", "checkpoint_every=100", "data.num_workers=1"]
    sets = base_sets(ref, data) + more
    run_train(sets, 1, ref / "losses")
    expected = json.loads(Path(f"{ref / 'losses'}.rank0").read_text())["losses"]

    job = tmp_path / "job"
    sets = base_sets(job, data) + more
    proc = run_train(sets, 1, job / "losses", wait=False, start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "step 3/8" in line:
            os.killpg(proc.pid, signal.SIGTERM)  # the whole process group, as Slurm and timeout do
    assert proc.wait(timeout=600) == 124, "".join(seen)[-3000:]
    first = json.loads(Path(f"{job / 'losses'}.rank0").read_text())
    assert first["preempted"] and 3 <= first["step"] < 8
    run_train(sets, 1, job / "losses")
    second = json.loads(Path(f"{job / 'losses'}.rank0").read_text())
    assert second["run_id"] == first["run_id"]  # the same MLflow run continues
    assert first["losses"] + second["losses"] == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_two_ranks_killed_then_resumed_match_uninterrupted(data, tmp_path):
    """kill -9 of a 2-rank job with 2 loader workers per rank after its first checkpoint; the
    rerun resumes from the latest complete checkpoint with each rank's data position (no replay)
    and gives the uninterrupted run's losses."""
    import re

    ref = tmp_path / "ref"
    extra = ["zero_stage=2", "total_steps=40", "checkpoint_every=3", "keep_last=20", "data.num_workers=2"]
    run_train(base_sets(ref, data) + extra, 2, ref / "losses")
    expected = [json.loads(Path(f"{ref / 'losses'}.rank{r}").read_text())["losses"] for r in range(2)]

    job = tmp_path / "job"
    sets = base_sets(job, data) + extra
    proc = run_train(sets, 2, job / "losses", wait=False, start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "checkpoint step_3" in line:  # kill -9 the launcher, torchrun and both ranks
            import psutil

            family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            for p in family:
                p.kill()
            psutil.wait_procs(family, timeout=60)
            break
    proc.wait(timeout=120)
    out = run_train(sets, 2, job / "losses")
    found = re.search(r"resumed from step_(\d+)", out.stdout)
    assert found, out.stdout[-2000:]
    k = int(found.group(1))
    assert 3 <= k < 40, "".join(seen)[-2000:]
    for r in range(2):
        got = json.loads(Path(f"{job / 'losses'}.rank{r}").read_text())["losses"]
        assert got == pytest.approx(expected[r][k:], rel=1e-6, abs=1e-7), r


@pytest.fixture
def mlflow_server(tmp_path):
    """A real MLflow tracking server on 127.0.0.1 with artifact serving."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    proc = subprocess.Popen([mlflow_cli, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--artifacts-destination", str(tmp_path / "server_artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("mlflow server did not start")
            time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.mark.slow
def test_mlflow_server_receives_params_metrics_and_video(data, tmp_path, mlflow_server):
    import mlflow
    import torch

    from uva.vae import AutoencoderKL, VAEConfig
    from uva_io.vae_bundle import save_vae

    torch.manual_seed(0)  # a VAE whose latents match the test shards: 4 channels, stride 2
    vae = save_vae(AutoencoderKL(VAEConfig(ch=8, ch_mult=(1, 2), num_res_blocks=1, z_channels=4,
                                           attn_resolutions=(), resolution=4, scale=1.0, num_groups=4)),
                   tmp_path / "vae.safetensors")
    sets = base_sets(tmp_path, data) + ["zero_stage=2", "total_steps=4", "checkpoint_every=100",
                                        f"tracking_uri={mlflow_server}", "eval_every=2", f"eval_vae={vae}",
                                        "eval_sampling_steps=2", "eval_iters=2", "eval_batch_size=2"]
    run_train(sets, 2, tmp_path / "losses")
    run_id = json.loads(Path(f"{tmp_path / 'losses'}.rank0").read_text())["run_id"]
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    assert run.data.params["total_steps"] == "4" and run.data.params["model.size"] == "uva-tiny"
    metrics = set(run.data.metrics)
    assert {"loss", "lr", "val/video_psnr", "val/action_mse", "val/loss/policy"} <= metrics
    assert any(m.startswith("mode_loss/") for m in metrics)
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "prediction_step0000002.mp4", "prediction_step0000004.mp4"} <= names
    local = client.download_artifacts(run_id, "prediction_step0000004.mp4", str(tmp_path / "dl"))
    from uva_io.video import read_clip

    assert read_clip(local, None, 4).frames.shape[0] == 4  # 2 history + 2 predicted frames


@pytest.mark.slow
def test_two_stage_recipe_video_only_then_init_from_consolidated_weights(data, tmp_path):
    """Stage 1 video-only at ZeRO-3 (weights gathered into model/ema.safetensors), stage 2 starts from them."""
    import mlflow
    import torch
    from safetensors.torch import load_file

    from uva import UVA, model_config

    runs = {}
    for stage in (2, 3):
        work = tmp_path / f"s1_z{stage}"
        sets = base_sets(work, data) + [f"zero_stage={stage}", "total_steps=3", "checkpoint_every=3",
                                        "mode_weights={video: 1.0}", "optim.ema_decay=0.5"]
        run_train(sets, 2, work / "losses")
        runs[stage] = work / "run" / "checkpoints" / "step_3"
    z2 = load_file(str(runs[2] / "model.safetensors"))
    z3 = load_file(str(runs[3] / "model.safetensors"))
    ema3 = load_file(str(runs[3] / "ema.safetensors"))
    # the ZeRO-3 export is the whole model, and the same model ZeRO-2 trains from the same seed
    cfg = model_config("uva-tiny", latent_channels=4, latent_size=2, width=32, decoder_width=32, num_history=2,
                       num_future=2, action_horizon=4, action_dim=2, embodiments=["arm", "human"])
    fresh = UVA(cfg).state_dict()
    assert set(z3) == set(fresh) and all(z3[k].shape == fresh[k].shape for k in fresh)
    for k in z2:
        torch.testing.assert_close(z3[k], z2[k], rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(ema3[k], z3[k]) for k in z3)  # EMA weights are their own
    r0 = json.loads(Path(f"{tmp_path / 's1_z3' / 'losses'}.rank0").read_text())
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 's1_z3' / 'run' / 'mlflow.db'}")
    per_mode = {m for m in client.get_run(r0["run_id"]).data.metrics if m.startswith("mode_loss/")}
    assert per_mode == {"mode_loss/video"}  # stage 1 trains video only

    work = tmp_path / "s2"
    sets = base_sets(work, data) + ["zero_stage=2", "total_steps=2", "checkpoint_every=100",
                                    f"init_from={runs[3].parent}", "optim.ema_decay=0", "optim.lr=1e-12"]
    proc = run_train(sets, 1, work / "losses")
    assert f"initialized from {runs[3] / 'ema.safetensors'}" in proc.stdout
    final = load_file(str(work / "run" / "checkpoints" / "step_2" / "model.safetensors"))
    for k in ema3:  # lr ~ 0: stage 2 still holds stage 1's EMA weights
        torch.testing.assert_close(final[k], ema3[k], rtol=1e-5, atol=1e-6)

    bad = base_sets(tmp_path / "bad", data) + ["total_steps=1", f"init_from={runs[3]}",
                                                "model.overrides={latent_channels: 4, latent_size: 2, width: 48, decoder_width: 48}"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([cli("uva-pretrain"), *[a for s in bad for a in ("--set", s)]],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0 and "is from a different model size or layout than uva-tiny" in out.stdout + out.stderr


def test_a_failing_step_exits_with_the_error_instead_of_hanging_on_its_loader_workers(data, tmp_path):
    """Loader workers ignore SIGTERM (a preemption signal must not kill them), so a trainer that
    left them running when an error unwound the loop hung at exit in multiprocessing's final join.
    A model whose latent grid (3 x 3) is not the data's (2 x 2) fails at the first forward."""
    sets = [s.replace("latent_size: 2", "latent_size: 3") for s in base_sets(tmp_path, data)]
    sets += ["zero_stage=2", "total_steps=4", "data.num_workers=2"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [cli("uva-pretrain"), *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert "history must be" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
