"""Latent-shard loading: windows, normalization, VAE check, mixing, starving, corrupt samples."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data import (
    DataConfig,
    MixedStream,
    ShardSetStream,
    SourceConfig,
    WindowConfig,
    cut_windows,
    make_loader,
)
from pipeline.robots import normalize_actions, unnormalize_actions
from uva_io.files import npy_bytes
from uva_io.shardset import INDEX_FORMAT, compute_action_stats, iter_tar_samples, write_shard
from uva_io.video import resample_indices


def make_set(root: Path, robot: str, episodes: int, frames: int, with_actions: bool, vae: str = "vae0",
             per_shard: int = 2, corrupt: bool = False, action_dim: int = 2, latent=(4, 2, 2),
             config: dict | None = None, proprio_dim: int = 0, cameras: tuple[str, ...] = ("main",),
             instructions: list[str] | None = None, text_encoder: str = "hash:32", text_tokens: int = 4,
             ramp: bool = False, control_hz: float | None = None) -> Path:
    """A shard set of synthetic latents; ``instructions`` (one per episode, "" = none) are stored
    as the tokens of ``text_encoder``, as the encode job does. ``control_hz``: actions and
    proprioception at that rate (the latents at 10 fps) with each frame's row, as the encode job
    writes them now; None: one row per frame (sets written before)."""
    from uva_io.text import describe, load_text_encoder

    root.mkdir(parents=True)
    shards = []
    encoder = load_text_encoder(text_encoder, text_tokens) if instructions else None
    for s in range(0, episodes, per_shard):
        samples = []
        for e in range(s, min(s + per_shard, episodes)):
            lat = np.full((frames, *latent), e, np.float16) + np.arange(frames, dtype=np.float16)[:, None, None, None]
            if ramp:  # cells differ within a frame (a shift shows)
                lat = lat + np.arange(latent[1] * latent[2], dtype=np.float16).reshape(latent[1:]) / 64
            rows = frames if control_hz is None else int(round(frames * control_hz / 10))
            meta = {"robot": robot} if control_hz is None else {"robot": robot, "control_hz": control_hz,
                                                                 "num_rows": rows}
            sample = {"__key__": f"{robot}{e}", "meta.json": json.dumps(meta).encode()}
            if control_hz is not None and (with_actions or proprio_dim):
                sample["frame_index.npy"] = npy_bytes(resample_indices(rows, control_hz, 10.0))
            for c, cam in enumerate(cameras):  # camera c: the frame value + 100 c
                sample[f"latents.{cam}.npy"] = npy_bytes(lat + np.float16(100 * c))
            if with_actions:
                cols = [np.arange(rows) * (1 + k) * (-1) ** k for k in range(action_dim)]
                sample["actions.npy"] = npy_bytes(np.stack(cols, 1).astype(np.float32))
            if proprio_dim:  # state k of frame t: 10 * e + t + k
                state = 10 * e + np.arange(rows)[:, None] + np.arange(proprio_dim)[None]
                sample["proprio.npy"] = npy_bytes(state.astype(np.float32))
            if encoder is not None and instructions[e]:
                sample["lang.npy"] = npy_bytes(encoder.encode([instructions[e]])[0])
            if corrupt and e == 0:
                del sample["meta.json"]
            samples.append(sample)
        write_shard(root, "latents", s // per_shard, samples, {})
        shards.append({"name": f"latents-{s // per_shard:06d}.tar", "num_episodes": len(samples), "num_frames": 0})
    where = {f"{robot}{e}": {"shard": f"latents-{e // per_shard:06d}.tar", "cameras": list(cameras), "robot": robot,
                             "has_actions": with_actions, **({"control_hz": control_hz} if control_hz else {})}
             for e in range(episodes)}
    (root / "index.json").write_text(json.dumps({"format": INDEX_FORMAT, "vae": vae, "shards": shards,
                                                 "episodes": where, "config": config or {}, "robots": [robot],
                                                 "text_encoder": describe(encoder) if encoder else None}))
    stats = compute_action_stats(sorted(root.glob("*.tar"))) if with_actions and not corrupt else \
        ({robot: {"mean": [0, 0], "std": [1, 1], "dim": action_dim}} if with_actions else {})
    (root / "stats.json").write_text(json.dumps(stats))
    return root


def test_cut_windows_layout():
    w = WindowConfig(num_history=2, num_future=2, frame_stride=3, action_horizon=6)
    lat = np.arange(12, dtype=np.float32)[:, None, None, None]
    act = np.arange(12, dtype=np.float32)[:, None]
    wins = list(cut_windows(lat, act, w))
    assert len(wins) == 12 - w.span + 1 == 3
    first = wins[0]
    assert first["history"].ravel().tolist() == [0, 3] and first["future"].ravel().tolist() == [6, 9]
    assert first["actions"].ravel().tolist() == [3, 4, 5, 6, 7, 8]  # from the last history frame on
    with pytest.raises(ValueError, match="multiple of action_horizon"):
        WindowConfig(num_future=2, frame_stride=3, action_horizon=4).validate()


@pytest.mark.parametrize("mode", ["mean_std", "q01_q99"])
def test_normalization_round_trip(mode):
    x = np.random.default_rng(0).normal(3, 2, (100, 3))
    stats = {"mean": x.mean(0), "std": x.std(0), "q01": np.quantile(x, 0.01, 0), "q99": np.quantile(x, 0.99, 0)}
    assert np.allclose(unnormalize_actions(normalize_actions(x, stats, mode), stats, mode), x)


def test_refuses_foreign_vae(tmp_path):
    make_set(tmp_path / "a", "arm", 2, 20, True, vae="aaa")
    cfg = DataConfig(sources=[SourceConfig(str(tmp_path / "a"))], vae_identity="bbb")
    with pytest.raises(ValueError, match="VAE aaa"):
        ShardSetStream(cfg.sources[0], cfg)
    make_set(tmp_path / "b", "human", 2, 20, False, vae="ccc")
    with pytest.raises(ValueError, match="different VAEs"):
        MixedStream(DataConfig(sources=[SourceConfig(str(tmp_path / "a")), SourceConfig(str(tmp_path / "b"))]))


def test_mix_weights_actions_normalized_and_action_free(tmp_path):
    make_set(tmp_path / "robot", "arm", 4, 20, True)
    make_set(tmp_path / "human", "human", 4, 20, False)
    cfg = DataConfig(sources=[SourceConfig(str(tmp_path / "robot"), 3.0), SourceConfig(str(tmp_path / "human"), 1.0)],
                     window=WindowConfig(2, 2, 2, 4), shuffle_buffer=8, num_workers=0)
    it = iter(MixedStream(cfg))
    batch = [next(it) for _ in range(400)]
    frac = sum(bool(b["has_actions"]) for b in batch) / len(batch)
    assert 0.68 < frac < 0.82
    acts = torch.stack([b["actions"] for b in batch if b["has_actions"]])
    assert acts.abs().max() < 3  # normalized with stored statistics
    assert all(b["actions"].abs().sum() == 0 for b in batch if not b["has_actions"])


def test_embodiments_action_masks_and_views_of_a_mixed_batch(tmp_path):
    """A 2-d robot with two cameras, a 3-d robot with one, human video with one: each window says
    its robot (id in data.embodiments), which action dimensions are its own, and which views it
    has; views come in the configured order, an absent one is zeros."""
    make_set(tmp_path / "franka", "franka", 2, 20, True, cameras=("exterior", "wrist"))
    make_set(tmp_path / "arm", "arm", 2, 20, True, action_dim=3, cameras=("front",))
    make_set(tmp_path / "human", "human", 2, 20, False)
    cfg = DataConfig(sources=[SourceConfig(str(tmp_path / "franka"), cameras=["wrist", "exterior"]),
                              SourceConfig(str(tmp_path / "arm"), cameras=["front", "wrist"]),
                              SourceConfig(str(tmp_path / "human"))],
                     window=WindowConfig(2, 2, 2, 4), shuffle_buffer=8, num_workers=0, action_dim=3, num_views=2,
                     embodiments=["arm", "franka", "human"])
    it = iter(MixedStream(cfg))
    seen = {}
    for _ in range(60):
        w = next(it)
        seen.setdefault(int(w["embodiment"]), w)
    assert sorted(seen) == [0, 1, 2]
    arm, franka, human = seen[0], seen[1], seen[2]
    assert franka["action_mask"].tolist() == [True, True, False] and arm["action_mask"].tolist() == [True] * 3
    assert not human["action_mask"].any() and not human["has_actions"]
    assert franka["history"].shape == (2, 2, 4, 2, 2)
    assert franka["view_mask"].tolist() == [True, True] and arm["view_mask"].tolist() == [True, False]
    # view 0 of franka is its wrist camera (stored second: +100), view 1 the exterior one
    assert float(franka["history"][0, 0].min() - franka["history"][0, 1].min()) == 100.0
    assert arm["history"][:, 1].abs().sum() == 0 and human["view_mask"].tolist() == [True, False]
    with pytest.raises(ValueError, match=r"robot\(s\) \['human'\], which have no embodiment"):
        MixedStream(DataConfig(sources=cfg.sources, window=cfg.window, action_dim=3, num_views=2,
                               embodiments=["arm", "franka"]))


def test_instruction_tokens_ride_with_each_window_and_a_foreign_encoder_is_refused(tmp_path):
    """Every window carries its episode's instruction tokens (zeros without one, human video
    included); a set embedded by another text encoder is named, not silently mixed."""
    from uva_io.text import load_text_encoder

    make_set(tmp_path / "franka", "franka", 2, 20, True, instructions=["open the drawer", ""])
    make_set(tmp_path / "human", "human", 1, 20, False)
    make_set(tmp_path / "other", "franka", 1, 20, True, instructions=["open"], text_encoder="hash:16")
    cfg = DataConfig(sources=[SourceConfig(str(tmp_path / "franka")), SourceConfig(str(tmp_path / "human"))],
                     window=WindowConfig(2, 2, 2, 4), shuffle_buffer=8, num_workers=0, lang_dim=32, lang_tokens=4,
                     text_encoder="hash-v2-32", embodiments=["franka", "human"])
    want = torch.from_numpy(load_text_encoder("hash:32", 4).encode(["open the drawer"])[0])
    langs = {}
    it = iter(MixedStream(cfg))
    for _ in range(60):
        w = next(it)
        key = (int(w["embodiment"]), bool(w["lang"].any()))
        langs.setdefault(key, w["lang"])
    assert set(langs) == {(0, True), (0, False), (1, False)}
    torch.testing.assert_close(langs[(0, True)], want)
    batch = next(iter(make_loader(cfg, 4)))
    assert batch["lang"].shape == (4, 4, 32)
    with pytest.raises(ValueError, match=r"embedded by hash:16 .* re-encode it"):
        MixedStream(replace(cfg, sources=[SourceConfig(str(tmp_path / "other"))]))


def test_proprio_at_history_frames_normalized_and_zero_without(tmp_path):
    make_set(tmp_path / "robot", "arm", 2, 20, True, per_shard=1, proprio_dim=3)
    make_set(tmp_path / "human", "human", 2, 20, False)
    stats = json.loads((tmp_path / "robot" / "stats.json").read_text())["arm"]["proprio"]
    assert stats["dim"] == 3 and stats["count"] == 40
    w = WindowConfig(2, 2, 3, 6)
    wins = list(cut_windows(np.zeros((12, 1, 1, 1)), None, w, np.arange(12, dtype=np.float32)[:, None]))
    assert wins[1]["proprio"].ravel().tolist() == [1, 4]  # the state at each history frame
    cfg = DataConfig(sources=[SourceConfig(str(tmp_path / "robot")), SourceConfig(str(tmp_path / "human"))],
                     window=WindowConfig(2, 2, 2, 4), shuffle_buffer=1, num_workers=0, proprio_dim=4)
    it = iter(MixedStream(cfg))
    batch = [next(it) for _ in range(60)]
    robot = [b for b in batch if b["has_actions"]]
    assert all(b["proprio"].shape == (2, 4) for b in batch) and robot
    for b in robot:  # normalized with the stored statistics, zero-padded to proprio_dim
        assert b["proprio"][:, 3].abs().sum() == 0 and np.abs(b["proprio"][:, :3].numpy()).max() < 3
        assert np.allclose(np.diff(unnormalize_actions(b["proprio"][:, :3].numpy(), stats, "mean_std"), axis=0), 2, atol=1e-3)
    assert all(b["proprio"].abs().sum() == 0 for b in batch if not b["has_actions"])
    assert "proprio" not in next(iter(MixedStream(DataConfig(sources=cfg.sources[:1], window=cfg.window,
                                                             shuffle_buffer=1, num_workers=0))))


def test_episode_pool_interleaves_episodes_and_gives_each_window_once_per_pass(tmp_path):
    make_set(tmp_path / "r", "arm", 4, 20, True, per_shard=1, proprio_dim=1)
    stats = json.loads((tmp_path / "r" / "stats.json").read_text())["arm"]["proprio"]

    def windows(pool: int, n: int) -> list[tuple[int, int]]:
        cfg = DataConfig(sources=[SourceConfig(str(tmp_path / "r"))], window=WindowConfig(2, 2, 2, 4),
                         shuffle_episodes=pool, shuffle_buffer=1, num_workers=0, proprio_dim=1)
        it = iter(ShardSetStream(cfg.sources[0], cfg))
        out = []
        for _ in range(n):
            win = next(it)
            lat = float(win["history"][0, 0, 0, 0])  # e + t
            state = float(unnormalize_actions(win["proprio"][0].numpy(), stats, "mean_std")[0])  # 10 e + t
            e = round((state - lat) / 9)
            out.append((e, round(lat) - e))
        return out

    every = [(e, t) for e in range(4) for t in range(14)]  # 4 episodes x 14 windows
    one = windows(1, len(every))  # a pool of one: episode after episode, each window once per pass
    assert sorted(one) == every and one != sorted(one)  # in random order within an episode
    mixed = windows(4, 2 * len(every))
    assert len({e for e, _ in mixed[:12]}) >= 3  # episodes interleaved, not one after another
    assert set(mixed) == set(every) and max(mixed.count(w) for w in every) <= 3


def test_episode_shorter_than_a_window_is_a_clear_error(tmp_path):
    make_set(tmp_path / "short", "arm", 2, 5, True)
    cfg = DataConfig(sources=[SourceConfig(str(tmp_path / "short"))], window=WindowConfig(2, 2, 2, 4), num_workers=0)
    with pytest.raises(ValueError, match="has the 7 frames one window spans"):
        next(iter(ShardSetStream(cfg.sources[0], cfg)))


def test_no_starving_with_few_shards(tmp_path):
    make_set(tmp_path / "one", "arm", 1, 20, True, per_shard=1)
    cfg = DataConfig(sources=[SourceConfig(str(tmp_path / "one"))], window=WindowConfig(2, 2, 2, 4),
                     shuffle_buffer=2, num_workers=2)
    for rank in range(2):
        loader = make_loader(cfg, batch_size=3, rank=rank, world_size=2)
        batch = next(iter(loader))
        assert batch["history"].shape == (3, 2, 4, 2, 2)


def test_corrupt_sample_is_skipped(tmp_path):
    make_set(tmp_path / "c", "arm", 3, 20, True, corrupt=True)
    cfg = DataConfig(sources=[SourceConfig(str(tmp_path / "c"))], window=WindowConfig(2, 2, 2, 4),
                     shuffle_buffer=1, num_workers=0)
    stream = ShardSetStream(cfg.sources[0], cfg)
    it = iter(stream)
    wins = [next(it) for _ in range(30)]
    assert stream.num_corrupt >= 1 and len(wins) == 30


def test_held_out_set_uses_training_statistics(tmp_path):
    make_set(tmp_path / "train", "arm", 2, 20, True)
    make_set(tmp_path / "val", "arm", 2, 20, True)
    stats = json.loads((tmp_path / "train" / "stats.json").read_text())
    stats["arm"]["mean"] = [100.0, 100.0]
    (tmp_path / "train" / "stats.json").write_text(json.dumps(stats))
    from pipeline.data import merged_stats

    cfg = DataConfig(sources=[SourceConfig(str(tmp_path / "val"))], window=WindowConfig(2, 2, 2, 4), num_workers=0)
    train_stats = merged_stats([SourceConfig(str(tmp_path / "train"))])
    win = next(iter(MixedStream(cfg, stats=train_stats)))
    assert win["actions"].max() < -5  # shifted by the training mean, not the held-out set's own


def test_shards_read_by_the_webdataset_library(tmp_path):
    """Our shards are plain WebDataset: the webdataset package reads and decodes them unchanged."""
    import webdataset as wds

    root = make_set(tmp_path / "set", "arm", 3, 6, True, per_shard=2)
    urls = [str(p) for p in sorted(root.glob("*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode())
    assert [s["__key__"] for s in samples] == ["arm0", "arm1", "arm2"]
    ours = [s for u in urls for s in iter_tar_samples(u)]
    for theirs, mine in zip(samples, ours):
        assert np.array_equal(theirs["latents.main.npy"], mine["latents.main.npy"])
        assert theirs["latents.main.npy"].dtype == np.float16
        assert np.array_equal(theirs["actions.npy"], mine["actions.npy"]) and theirs["meta.json"] == {"robot": "arm"}


def batches(loader_iter, position, n):
    return [position.take(next(loader_iter)) for _ in range(n)]


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_from_a_saved_position_continues_the_stream_exactly(tmp_path, workers):
    """A loader restarted from a DataPosition gives the batches the uninterrupted loader gives
    next, for any number consumed (loader workers rotated so the next batch comes from the
    worker that would have made it), and reads only a bounded number of samples to get there."""
    from pipeline import data as data_mod
    from pipeline.data import DataPosition

    make_set(tmp_path / "robot", "arm", 12, 30, True, per_shard=2)
    make_set(tmp_path / "human", "human", 6, 25, False, per_shard=3)
    cfg = DataConfig(sources=[SourceConfig(str(tmp_path / "robot"), 2.0), SourceConfig(str(tmp_path / "human"))],
                     window=WindowConfig(2, 2, 2, 4), shuffle_episodes=3, shuffle_buffer=5, num_workers=workers)
    for consumed in (3, 41):  # 41 batches of 4: several passes over the shards, an odd worker turn
        run = iter(make_loader(cfg, 4))
        pos = DataPosition(workers)
        batches(run, pos, consumed)
        saved = pos.state()
        want = batches(run, pos, 12)
        assert saved["consumed"] == consumed and len(saved["workers"]) == max(1, workers)
        resumed = iter(make_loader(cfg, 4, resume=saved))
        assert same(batches(resumed, DataPosition(workers, saved), 12), want)
    with pytest.raises(ValueError, match="data.num_workers=2"):
        make_loader(DataConfig(sources=cfg.sources, window=cfg.window, num_workers=1), 4,
                    resume={"consumed": 1, "num_workers": 2, "workers": {}})
    # what a restore reads does not grow with the position
    reads = []
    real = data_mod.tar_samples

    def counting(url, handler):
        for sample in real(url, handler):
            reads.append(url)
            yield sample

    cfg0 = DataConfig(sources=cfg.sources, window=cfg.window, shuffle_episodes=3, shuffle_buffer=5, num_workers=0)
    cost = {}
    for consumed in (5, 400):
        run, pos = iter(make_loader(cfg0, 4)), DataPosition(0)
        batches(run, pos, consumed)
        data_mod.tar_samples = counting
        try:
            reads.clear()
            next(iter(make_loader(cfg0, 4, resume=pos.state())))
            cost[consumed] = len(reads)
        finally:
            data_mod.tar_samples = real
    assert cost[400] <= 2 * cost[5] + 12, cost  # bounded by the pool, buffer and one shard, not by 400 batches


def test_torn_shard_in_the_middle_is_skipped_and_counted(tmp_path):
    root = make_set(tmp_path / "t", "arm", 6, 20, True, per_shard=2, proprio_dim=1)
    stats = json.loads((root / "stats.json").read_text())["arm"]["proprio"]
    middle = root / "latents-000001.tar"  # episodes arm2 and arm3
    import tarfile

    with tarfile.open(middle) as tar:
        cut = next(m.offset_data for m in tar if m.name.startswith("arm3.")) + 100
    middle.write_bytes(middle.read_bytes()[:cut])  # cut inside arm3's first member
    cfg = DataConfig(sources=[SourceConfig(str(root))], window=WindowConfig(2, 2, 2, 4), shuffle_episodes=2,
                     shuffle_buffer=1, num_workers=0, proprio_dim=1)
    stream = ShardSetStream(cfg.sources[0], cfg)
    it = iter(stream)
    episodes = set()
    for _ in range(150):
        win = next(it)
        lat = float(win["history"][0, 0, 0, 0])  # e + t
        state = float(unnormalize_actions(win["proprio"][0].numpy(), stats, "mean_std")[0])  # 10 e + t
        episodes.add(round((state - lat) / 9))
    assert stream.errors.count >= 1  # reported and counted, not fatal
    assert episodes == {0, 1, 2, 4, 5}  # arm2, before the cut, and the shards around it are read


def test_shard_sets_read_over_http(tmp_path):
    """A shard set served over HTTP (a real server on 127.0.0.1) is read like the local folder:
    index, statistics and tars through fsspec/webdataset; one pass gives the same windows (the
    order differs: the set's location seeds its shuffle)."""
    import http.server
    import threading

    root = make_set(tmp_path / "sets" / "arm", "arm", 4, 20, True, per_shard=2)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(tmp_path / "sets"), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/arm"

        def one_pass(path: str) -> list:
            cfg = DataConfig(sources=[SourceConfig(path)], window=WindowConfig(2, 2, 2, 4), shuffle_episodes=1,
                             shuffle_buffer=1, num_workers=0)
            it = iter(ShardSetStream(cfg.sources[0], cfg))
            wins = [next(it) for _ in range(4 * 14)]  # 4 episodes x 14 windows: each once per pass
            return sorted((w["history"].flatten().tolist(), w["actions"].flatten().tolist()) for w in wins)

        assert one_pass(url) == one_pass(str(root))
    finally:
        server.shutdown()


def test_shift_augmentation_moves_the_whole_clip_alike_and_resumes_exactly(tmp_path):
    """augment_shift: every frame (history and future) of a window moves by one shift, the
    edge cells repeat into the space left behind, actions are untouched, shifts vary across
    windows, and a resumed stream shifts its windows as the uninterrupted one does."""
    from pipeline.data import DataPosition, shift_window

    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    moved = shift_window({"history": x, "future": x + 100, "actions": torch.ones(3)}, 1, -1)
    h = moved["history"]
    assert torch.equal(h[:, :, 1:, :3], x[:, :, :3, 1:])  # content moved down one, left one
    assert torch.equal(h[:, :, 0, :3], x[:, :, 0, 1:]) and torch.equal(h[:, :, :, 3], h[:, :, :, 2])  # edges repeat
    assert torch.equal(moved["future"] - 100, h) and torch.equal(moved["actions"], torch.ones(3))
    views = torch.randn(2, 3, 4, 5, 5)  # (T, V, C, S, S): every view alike
    v = shift_window({"history": views, "future": views}, 2, 0)["history"]
    assert torch.equal(v[..., 2:, :], views[..., :3, :])

    latent = (1, 6, 6)
    make_set(tmp_path / "robot", "arm", 6, 30, True, per_shard=2, latent=latent, ramp=True)
    plain = DataConfig(sources=[SourceConfig(str(tmp_path / "robot"))], window=WindowConfig(2, 2, 2, 4),
                       shuffle_episodes=3, shuffle_buffer=5, num_workers=0)
    aug = replace(plain, augment_shift=1)
    ref = iter(make_loader(plain, 8))
    got = iter(make_loader(aug, 8))
    shifted = 0
    for _ in range(4):
        a, b = next(ref), next(got)
        assert torch.equal(a["actions"], b["actions"])  # the same windows in the same order
        shifted += int((a["history"] != b["history"]).flatten(1).any(1).sum())
    assert shifted > 16  # most of the 32 windows moved (8 of the 9 shifts move them)
    run, pos = iter(make_loader(aug, 4)), DataPosition(0)
    batches(run, pos, 7)
    saved = pos.state()
    want = batches(run, pos, 6)
    assert same(batches(iter(make_loader(aug, 4, resume=saved)), DataPosition(0, saved), 6), want)


@pytest.mark.parametrize("mode", ["mean_std", "q01_q99"])
def test_relative_chunks_are_the_actions_minus_the_state_at_the_last_history_frame(tmp_path, mode):
    """With relative_actions, a window's chunk (unnormalized with the relative statistics) is each
    action minus the robot's state at the last history frame, for the dimensions related to a
    proprioception; an unrelated dimension stays absolute; the statistics are those of such
    chunks; adding the state back (what the policy does) gives the actions."""
    from pipeline.finetune import relative_chunks
    from pipeline.robots import RobotConfig, chunk_origin

    make_set(tmp_path / "r", "bot", 3, 10, True, per_shard=1, action_dim=3, proprio_dim=2)
    robot = RobotConfig(name="bot", action_names=["x", "y", "grip"], proprio_names=["px", "py"],
                        relative_to={"x": "px", "y": "py"})
    robot.validate()
    w = WindowConfig(2, 2, 2, 4)  # 2 stored frames per future frame, 4 actions: one per stored frame
    rel = relative_chunks(robot, [str(tmp_path / "r")], w)
    assert rel["origin"] == [0, 1, -1]

    def action(t):  # make_set's actions (dimension k: t * (1 + k) * (-1)^k) and states (10 e + t + k)
        return np.array([t, -2.0 * t, 3.0 * t])

    def state(e, t):
        return np.array([10.0 * e + t, 10.0 * e + t + 1])

    truth = np.array([action(t + k) - np.r_[state(e, t), 0] for e in range(3) for t in range(10)
                      for k in range(4) if t + k < 10])
    np.testing.assert_allclose(rel["stats"]["mean"], truth.mean(0), rtol=1e-5)
    np.testing.assert_allclose(rel["stats"]["q99"], np.quantile(truth, 0.99, 0), rtol=1e-4)
    cfg = DataConfig(sources=[SourceConfig(str(tmp_path / "r"))], window=w, shuffle_buffer=1, num_workers=0,
                     action_dim=3, proprio_dim=2, normalization=mode, relative_actions={"bot": rel})
    pstats = json.loads((tmp_path / "r" / "stats.json").read_text())["bot"]["proprio"]
    seen = 0
    for win in [x for _, x in zip(range(40), iter(ShardSetStream(cfg.sources[0], cfg)))]:
        last = unnormalize_actions(win["proprio"][-1].numpy(), pstats, mode)  # 10 e + t_last (+1)
        e, t = divmod(int(round(last[0])), 10)
        got = unnormalize_actions(win["actions"].numpy(), rel["stats"], mode)
        want = np.stack([action(t + k) for k in range(4)]) - np.r_[state(e, t), 0]
        np.testing.assert_allclose(got, want, atol=1e-3)
        back = got + chunk_origin(state(e, t)[None], rel["origin"])
        np.testing.assert_allclose(back, np.stack([action(t + k) for k in range(4)]), atol=1e-3)
        seen += 1
    assert seen == 40
    with pytest.raises(ValueError, match="relative_to refers to \\['pz'\\], which are not proprio_names"):
        RobotConfig(name="bot", action_names=["x"], proprio_names=["px"], relative_to={"x": "pz"}).validate()
    with pytest.raises(ValueError, match="relates no action to its proprioception"):
        relative_chunks(replace(robot, relative_to={}), [str(tmp_path / "r")], w)
