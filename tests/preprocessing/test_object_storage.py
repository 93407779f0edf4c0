"""Object storage end to end against a real S3-compatible server (moto's server mode) started on
127.0.0.1: encode from an s3:// manifest, encode to s3://, kill -9 mid-run and resume, then train
from the s3:// shard set. Endpoint and credentials reach every process through the standard
variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.preprocessing.test_encode_latents import (  # noqa: F401
    ROOT,
    SCRIPT,
    encode,
    free_port,
    read_all,
    vae_path,
)

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_server():
    """moto_server on 127.0.0.1 (a separate process), the AWS variables pointing at it."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError as err:
            if "HTTP Error" in str(err):
                break
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("moto_server did not start") from err
            time.sleep(0.2)
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=url)
    yield url
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def ray_head(s3_server, tmp_path_factory):
    """A Ray head started after the S3 variables are set (its workers inherit them)."""
    port = free_port()
    ray_cli = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    subprocess.run([ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
                    "--include-dashboard=false", "--disable-usage-stats"], check=True, env=env, capture_output=True)
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    yield f"127.0.0.1:{port}"
    subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True)
    if saved is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = saved


def bucket(name: str):
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir(name)
    return fs


def test_encode_to_s3_kill9_resume_and_train_from_s3(s3_server, vae_path, ray_head, tmp_path):  # noqa: F811
    from tests.conftest import make_video_file
    from uva_io.shardset import iter_tar_samples

    fs = bucket("uva")
    videos = tmp_path / "vids"
    videos.mkdir()
    for i in range(8):
        make_video_file(videos / f"v{i:02d}.mp4", num_frames=40)
    ref = tmp_path / "ref"
    encode(["--video-folder", str(videos), "--output", str(ref), "--set", "episodes_per_shard=1"], vae_path, ray_head)

    out = "s3://uva/sets/human"
    cmd = [sys.executable, str(SCRIPT), "--no-progress", "--video-folder", str(videos), "--output", out,
           "--set", f"vae={vae_path}", "--set", "resolution=32", "--set", "fps=null",
           "--set", "episodes_per_shard=1", "--set", "max_in_flight=1", "--ray-address", ray_head]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    def tars() -> int:
        fs.invalidate_cache()  # s3fs keeps listings; the writer is another process
        return len(fs.glob("uva/sets/human/*.tar"))

    while time.time() < deadline and tars() < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = tars()
    assert 3 <= written < 8, "the kill must land mid-run"
    assert not fs.exists("uva/sets/human/index.json")  # the index comes last
    rerun = encode(["--video-folder", str(videos), "--output", out, "--set", "episodes_per_shard=1"], vae_path, ray_head)
    assert "to write" in rerun.stdout
    fs.invalidate_cache()
    names = sorted(Path(p).name for p in fs.ls("uva/sets/human"))
    local = sorted(p.name for p in ref.iterdir() if not p.name.startswith("."))
    assert names == local  # no temporary or duplicated objects
    for name in local:
        if name.endswith(".tar"):
            assert fs.cat_file(f"uva/sets/human/{name}") == (ref / name).read_bytes(), name
    index = json.loads(fs.cat_file("uva/sets/human/index.json"))
    assert index["num_episodes"] == 8

    # inputs in object storage: a manifest naming its videos relative to itself, actions by URL
    for i in range(3):
        fs.put_file(str(videos / f"v{i:02d}.mp4"), f"uva/raw/v{i:02d}.mp4")
        fs.pipe_file(f"uva/raw/a{i:02d}.npy", _npy(np.ones((40, 2), np.float32) * i))
    lines = [json.dumps({"episode_id": f"r{i}", "video": f"v{i:02d}.mp4", "actions": f"s3://uva/raw/a{i:02d}.npy",
                         "robot": "arm"}) for i in range(3)]
    fs.pipe_file("uva/raw/manifest.jsonl", ("\n".join(lines) + "\n").encode())
    encode(["--manifest", "s3://uva/raw/manifest.jsonl", "--output", "s3://uva/sets/robot"], vae_path, ray_head)
    got = {}
    fs.invalidate_cache()
    for tar in sorted(fs.glob("uva/sets/robot/*.tar")):
        for sample in iter_tar_samples(f"s3://{tar}"):
            got[sample["__key__"]] = sample
    assert sorted(got) == ["r0", "r1", "r2"] and got["r2"]["actions.npy"].max() == 2.0
    ref_sample = read_all(ref)["v00"]
    assert np.array_equal(got["r0"]["latents.main.npy"], ref_sample["latents.main.npy"])

    # train from the s3:// shard sets
    run = tmp_path / "run"
    sets = ["model.size=uva-tiny", "model.overrides={latent_channels: 4, latent_size: 8, patch_size: 2, width: 32, "
            "decoder_width: 32}", "data.sources=[{path: s3://uva/sets/robot, weight: 1}, {path: s3://uva/sets/human}]",
            "data.window={num_history: 2, num_future: 2, frame_stride: 2, action_horizon: 4}",
            "data.num_workers=1", "micro_batch_size=4", "total_steps=3", "checkpoint_every=3", "eval_every=0",
            f"run_dir={run}"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [str(Path(sys.executable).parent / "uva-pretrain"), *[a for s in sets for a in ("--set", s)],
           "--losses-out", str(run / "losses")]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    losses = json.loads(Path(f"{run / 'losses'}.rank0").read_text())["losses"]
    assert len(losses) == 3 and all(np.isfinite(losses))


def _npy(arr: np.ndarray) -> bytes:
    from uva_io.files import npy_bytes

    return npy_bytes(arr)


def test_lerobot_and_video_folder_read_from_s3(s3_server, vae_path, ray_head, tmp_path):  # noqa: F811
    """A LeRobot v3.0 dataset and a video folder uploaded to the server encode from their s3://
    prefixes to the latents and per-frame arrays of the same inputs read from disk; the shared
    LeRobot file is read by range requests, not downloaded per episode."""
    from tests.conftest import make_video_file
    from tests.preprocessing.test_encode_latents import make_lerobot

    fs = bucket("inputs")
    root = tmp_path / "so100_demo"
    make_lerobot(root)
    human = tmp_path / "human"
    (human / "sub").mkdir(parents=True)
    make_video_file(human / "a.mp4", num_frames=20)
    make_video_file(human / "sub" / "b.mp4", num_frames=24)
    (human / "notes.txt").write_text("not a video")
    fs.put(str(root), "inputs/so100_demo", recursive=True)
    fs.put(str(human), "inputs/human", recursive=True)
    local, remote = tmp_path / "local", tmp_path / "remote"
    args = ["--set", "fps=5"]
    encode(["--lerobot", str(root), "--video-folder", str(human), "--output", str(local), *args], vae_path, ray_head)
    encode(["--lerobot", "s3://inputs/so100_demo", "--video-folder", "s3://inputs/human", "--output", str(remote),
            *args], vae_path, ray_head)
    a, b = read_all(local), read_all(remote)
    assert sorted(a) == sorted(b) == ["a", "so100_demo_000000", "so100_demo_000001", "sub_b"]
    for key in a:
        for member, value in a[key].items():
            if member.endswith(".npy"):
                assert np.array_equal(b[key][member], value), f"{key}/{member}"
    assert b["so100_demo_000001"]["meta.json"]["instruction"] == "pull"

    proc = encode(["--video-folder", "s3://inputs/nothing-here", "--output", str(tmp_path / "x")], vae_path,
                  ray_head, check=False)
    assert proc.returncode == 2 and "s3://inputs/nothing-here" in proc.stderr and "not a folder" in proc.stderr


def test_rlds_and_lerobot_v21_read_from_s3(s3_server, vae_path, ray_head, tmp_path):  # noqa: F811
    """The TFDS-written RLDS fixture and the LeRobot-written v2.1 fixture, uploaded, encode from
    their s3:// prefixes to what they give from disk."""
    fixtures = ROOT / "tests" / "fixtures"
    fs = bucket("corpora")
    fs.put(str(fixtures / "rlds" / "uva_rlds_fixture"), "corpora/uva_rlds_fixture", recursive=True)
    fs.put(str(fixtures / "lerobot_v21"), "corpora/lerobot_v21", recursive=True)
    local, remote = tmp_path / "local", tmp_path / "remote"
    args = ["--source-fps", "5"]
    encode(["--rlds", str(fixtures / "rlds" / "uva_rlds_fixture" / "1.0.0"), "--lerobot", str(fixtures / "lerobot_v21"),
            "--output", str(local), *args], vae_path, ray_head)
    encode(["--rlds", "s3://corpora/uva_rlds_fixture/1.0.0", "--lerobot", "s3://corpora/lerobot_v21",
            "--output", str(remote), *args], vae_path, ray_head)
    a, b = read_all(local), read_all(remote)
    assert sorted(a) == sorted(b) and len(a) == 4 + 3
    for key in a:
        for member, value in a[key].items():
            if member.endswith(".npy"):
                assert np.array_equal(b[key][member], value), f"{key}/{member}"
        assert a[key]["meta.json"]["instruction"] == b[key]["meta.json"]["instruction"]
