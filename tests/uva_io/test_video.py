"""Decoding: a time segment of a shared file is reached by seeking, with the same frames as
decoding from the start; AV1 goes to PyAV; the decoder is chosen per codec."""

import numpy as np
import pytest

from tests.conftest import make_video_file
from uva_io.video import _decord_clip, _pyav_clip, probe_codec, read_clip, write_mp4


def test_pyav_segment_by_seeking_equals_decoding_from_the_start(tmp_path):
    path = str(make_video_file(tmp_path / "many.mp4", num_frames=60, size=(64, 80), fps=10))
    write_mp4(tmp_path / "gop.mp4", read_clip(path, None, 64).frames, 10, gop=10)  # a keyframe every 10 frames
    path = str(tmp_path / "gop.mp4")
    for start, end in ((2.0, 4.0), (2.35, 3.1), (0.0, 1.0), (5.0, None)):
        sought = _pyav_clip(path, None, 32, start, end, seek=True)
        scanned = _pyav_clip(path, None, 32, start, end, seek=False)
        assert np.array_equal(sought.frames, scanned.frames) and np.array_equal(sought.indices, scanned.indices)
        assert sought.num_source_frames == scanned.num_source_frames
    whole = _pyav_clip(path, None, 32, 0.0, None)
    assert np.array_equal(_pyav_clip(path, None, 32, 2.0, 4.0).frames, whole.frames[20:40])
    # resampling inside a segment follows the same rule with and without the seek
    a, b = _pyav_clip(path, 4, 32, 1.0, 5.0), _pyav_clip(path, 4, 32, 1.0, 5.0, seek=False)
    assert np.array_equal(a.frames, b.frames) and len(a.frames) == 16


def test_decord_segment_equals_the_slice_of_the_whole(tmp_path):
    pytest.importorskip("decord")
    path = str(make_video_file(tmp_path / "v.mp4", num_frames=40, fps=10))
    whole = _decord_clip(path, None, 32, 0.0, None)
    part = _decord_clip(path, None, 32, 1.0, 2.5)
    assert np.array_equal(part.frames, whole.frames[10:25]) and part.num_source_frames == 15


def test_av1_goes_to_pyav(tmp_path):
    frames = read_clip(str(make_video_file(tmp_path / "src.mp4", num_frames=30, size=(64, 64))), None, 64).frames
    path = str(write_mp4(tmp_path / "av1.mp4", frames, 10, codec="libsvtav1", gop=8))
    assert probe_codec(path) in ("av1", "libdav1d")
    clip = read_clip(path, None, 32, start=1.0, end=2.0)
    assert clip.backend == "pyav" and len(clip.frames) == 10
    assert np.array_equal(clip.frames, _pyav_clip(path, None, 32, 1.0, 2.0, seek=False).frames)
    assert probe_codec(str(tmp_path / "missing.mp4")) is None


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_chunks_are_bounded_and_add_up_to_the_whole(tmp_path, backend, monkeypatch):
    import uva_io.video as video

    path = str(make_video_file(tmp_path / "v.mp4", num_frames=50, fps=10))
    if backend == "pyav":  # as for AV1: PyAV first
        monkeypatch.setattr(video, "PYAV_FIRST", frozenset({video.probe_codec(path)}))
    whole = read_clip(path, 5, 32, 0.5, None)
    reader = video.ClipReader(path, 5, 32, 0.5, None, chunk_frames=7)
    chunks = list(reader)
    assert reader.backend == backend and all(len(f) <= 7 for f, _ in chunks) and len(chunks) == 4
    assert np.array_equal(np.concatenate([f for f, _ in chunks]), whole.frames)
    assert np.array_equal(np.concatenate([i for _, i in chunks]), whole.indices)
    assert reader.num_source_frames == whole.num_source_frames == 45


def test_a_url_segment_reads_only_the_bytes_around_it(tmp_path, monkeypatch):
    """A URL goes to PyAV through a seekable file object (range requests for s3:// and https://):
    the last of twenty episodes in a shared file is reached by seeking, reading a small part of the
    file, with the frames of the local read."""
    import io

    from uva_io import storage
    from uva_io.video import ClipReader

    local = tmp_path / "file-000.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (400, 64, 64, 3), dtype=np.uint8)  # incompressible
    write_mp4(local, frames, 10, gop=10)
    read = []

    class Counting(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def readable(self):
            return True

        def seekable(self):
            return True

        def readinto(self, b):
            n = self.f.readinto(b)
            read.append(n)
            return n

        def seek(self, offset, whence=0):
            return self.f.seek(offset, whence)

        def tell(self):
            return self.f.tell()

        def close(self):
            self.f.close()
            super().close()

    url = "s3://bucket/videos/file-000.mp4"
    exists = storage.exists
    monkeypatch.setattr(storage, "exists", lambda p: str(p) == url or exists(p))
    monkeypatch.setattr(storage, "open_read", lambda p: Counting(open(local, "rb")))
    got = list(ClipReader(url, None, 32, start=38.0, end=40.0))
    want = list(ClipReader(str(local), None, 32, start=38.0, end=40.0))
    assert np.array_equal(np.concatenate([f for f, _ in got]), np.concatenate([f for f, _ in want]))
    assert len(np.concatenate([f for f, _ in got])) == 20
    assert sum(read) < 0.2 * local.stat().st_size, (sum(read), local.stat().st_size)
