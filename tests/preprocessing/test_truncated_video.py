"""A video cut off after its header (a faststart mp4 whose tail is missing) decodes quietly
short: it is kept as far as it decodes and said, with both frame counts, or skipped when the
episode has per-frame rows that no longer match."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing.encode import EncodeConfig, decode_episode
from preprocessing.sources import Episode
from uva_io.video import ClipReader


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    import av

    d = tmp_path_factory.mktemp("cut")
    frames = (np.random.default_rng(0).random((64, 64, 64, 3)) * 255).astype(np.uint8)
    whole = d / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as c:  # the index first, as LeRobot writes
        s = c.add_stream("libx264", rate=10)
        s.width = s.height = 64
        s.pix_fmt = "yuv420p"
        for x in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(x, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    data = whole.read_bytes()
    cut = d / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    np.save(d / "actions.npy", np.zeros((64, 2), np.float32))
    return d


def test_the_reader_says_how_much_of_the_declared_video_decoded(videos):
    whole, cut = ClipReader(str(videos / "whole.mp4"), None, 32), ClipReader(str(videos / "cut.mp4"), None, 32)
    assert sum(len(f) for f, _ in whole) == 64 and whole.truncated is None
    n = sum(len(f) for f, _ in cut)
    assert 0 < n < 64 and cut.truncated == (n, 64)


def test_an_action_free_video_is_kept_and_said_one_with_actions_is_skipped(videos):
    cfg = EncodeConfig(fps=None, resolution=32)
    free = decode_episode(Episode("clip", {"main": str(videos / "cut.mp4")}, "human"), cfg)
    assert "error" not in free
    n = len(free["frames"]["main"])
    assert free["truncated"] == {"main": {"decoded": n, "declared": 64}}
    acted = decode_episode(Episode("ep", {"main": str(videos / "cut.mp4")}, "arm",
                                   actions=str(videos / "actions.npy")), cfg)
    assert "truncated" in acted["error"] and f"{n} of the 64 frames" in acted["error"]
    fine = decode_episode(Episode("ok", {"main": str(videos / "whole.mp4")}, "arm",
                                  actions=str(videos / "actions.npy")), cfg)
    assert "error" not in fine and "truncated" not in fine
