"""Media I/O: decoding video (decord or PyAV, chosen per codec) and writing mp4 files.

``read_clip`` returns uint8 frames (T, H, W, 3) already resized (short side) and center-cropped
to the target size, plus the source frame indices that were kept, so per-frame data such as
actions can be resampled with exactly the same indices. ``resize_center_crop`` is the one
resize rule: the encode job and the policy both use it. ``write_mp4`` writes demonstrations,
rollouts and decoded predictions.

    clip = read_clip("ep.mp4", fps=10, size=96)   # clip.frames, clip.indices, clip.source_fps
    clip = read_clip("file-000.mp4", 10, 96, start=41.2, end=53.0)   # one episode of a shared file

A time segment is reached by seeking to the keyframe before ``start`` (decord and PyAV alike),
never by decoding the file from its beginning: LeRobot v3 packs many episodes into one file per
camera, and decoding from the start would cost O(episodes^2) frames per file. AV1 (LeRobot's
default codec), which decord cannot read, goes to PyAV directly.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


class DecodeError(RuntimeError):
    """A video could not be read; the message names the file and the reason."""


@dataclass
class Clip:
    """Decoded, resampled frames of one video (or one time segment of it)."""

    frames: np.ndarray  # (T, H, W, 3) uint8
    indices: np.ndarray  # (T,) source frame index of each kept frame (relative to the segment)
    source_fps: float
    num_source_frames: int
    backend: str


def resample_indices(num_frames: int, src_fps: float, fps: float | None) -> np.ndarray:
    """Source frame indices for a target fps: nearest source frame at each target time."""
    if num_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    if not fps or abs(fps - src_fps) < 1e-6:
        return np.arange(num_frames, dtype=np.int64)
    duration = num_frames / src_fps
    times = np.arange(0.0, duration - 1e-9, 1.0 / fps)
    idx = np.floor(times * src_fps + 1e-6).astype(np.int64)
    return idx[idx < num_frames]


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, size, size, 3) uint8: short side to ``size``, then center crop."""
    t, h, w, _ = frames.shape
    if (h, w) == (size, size):
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


# full-size frames decoded before they are resized (a 720p batch of 16 is ~180 MB as float32)
FULL_BATCH = 16
# codecs decord's bundled FFmpeg cannot decode: PyAV reads them first
PYAV_FIRST = frozenset({"av1", "libdav1d", "libaom-av1"})


def probe_codec(path: str) -> str | None:
    """The codec name of the first video stream (None when PyAV is missing or cannot tell);
    remembered per file version, since the episodes of a LeRobot file all ask."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _probe_codec(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _probe_codec(path: str, size: int, mtime_ns: int) -> str | None:
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(path) as container:
            streams = container.streams.video
            return streams[0].codec_context.name if streams else None
    except Exception:  # the decoders report the real problem
        return None


def probe_duration(path: str) -> float | None:
    """Seconds of video in the first video stream, from the container (None if unknown)."""
    try:
        import av

        with contextlib.ExitStack() as stack:
            container = stack.enter_context(av.open(_source(stack, path)))
            streams = container.streams.video
            if not streams:
                return None
            stream = streams[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            if container.duration is not None:
                return container.duration / 1_000_000
            rate = stream.average_rate or stream.guessed_rate
            return stream.frames / float(rate) if stream.frames and rate else None
    except Exception:  # decoding reports unreadable files with their reason
        return None


def _source(stack: contextlib.ExitStack, path: str):
    """What PyAV opens: a local path, or a URL's file object (seeks become range requests)."""
    from uva_io import storage

    return stack.enter_context(storage.open_read(path)) if storage.is_remote(path) else path


def _decord_chunks(reader: "ClipReader") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    import decord

    r = reader
    vr = decord.VideoReader(r.path, ctx=decord.cpu(0), num_threads=1)
    src_fps = float(vr.get_avg_fps())
    n = len(vr)
    if n == 0 or src_fps <= 0:
        raise DecodeError(f"{r.path}: no frames")
    first = int(round(r.start * src_fps))
    last = n if r.end is None else min(n, int(round(r.end * src_fps)))
    seg = max(0, last - first)
    rel = resample_indices(seg, src_fps, r.fps)
    if not len(rel):
        raise DecodeError(f"{r.path}: no frames in [{r.start}, {r.end}) s")
    r.source_fps, r.num_source_frames, r.backend = src_fps, seg, "decord"
    r.declared_frames = n  # decord reads what the index declares, or fails
    for lo in range(0, len(rel), r.chunk_frames):
        idx = rel[lo : lo + r.chunk_frames]
        out = [resize_center_crop(vr.get_batch((idx[k : k + FULL_BATCH] + first).tolist()).asnumpy(), r.size)
               for k in range(0, len(idx), FULL_BATCH)]
        yield np.concatenate(out), idx


def _pyav_chunks(reader: "ClipReader", seek: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    import av

    r = reader
    with contextlib.ExitStack() as stack:
        container = stack.enter_context(av.open(_source(stack, r.path)))
        streams = container.streams.video
        if not streams:
            raise DecodeError(f"{r.path}: no video stream")
        stream = streams[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        src_fps = float(rate) if rate else 0.0
        if src_fps <= 0:
            raise DecodeError(f"{r.path}: unknown frame rate")
        r.source_fps, r.backend = src_fps, "pyav"
        seeked = seek and r.start > 0 and stream.time_base is not None
        if seeked:  # to the keyframe at or before start; the frames before start are skipped below
            container.seek(max(0, int((r.start - 1.0 / src_fps) / stream.time_base)), stream=stream, backward=True)
        step = None if not r.fps or abs(r.fps - src_fps) < 1e-6 else src_fps / r.fps
        small, full, indices, seg_index, next_pick, produced = [], [], [], 0, 0, 0
        restart = False

        def chunk() -> tuple[np.ndarray, np.ndarray]:
            nonlocal small, produced
            frames = np.concatenate(small)
            small = []
            idx = np.asarray(indices[produced : produced + len(frames)], dtype=np.int64)
            produced += len(frames)
            return frames, idx

        for n, frame in enumerate(container.decode(stream)):
            if frame.pts is None and seeked:
                if n == 0:  # no timestamps to place frames after a seek: read from the start
                    restart = True
                    break
                raise DecodeError(f"{r.path}: frames without timestamps after a seek")
            t = float(frame.pts * stream.time_base) if frame.pts is not None else seg_index / src_fps
            if t < r.start - 0.5 / src_fps:
                continue
            if r.end is not None and t >= r.end - 0.5 / src_fps:
                break
            # same rule as resample_indices: floor(k * src_fps / fps) for k = 0, 1, ...
            while step is None or seg_index == int(np.floor(next_pick * step + 1e-6)):
                full.append(frame.to_ndarray(format="rgb24"))
                indices.append(seg_index)
                next_pick += 1
                held = sum(len(x) for x in small)
                if len(full) >= min(FULL_BATCH, r.chunk_frames - held):
                    small.append(resize_center_crop(np.stack(full), r.size))
                    full = []
                    if held + len(small[-1]) >= r.chunk_frames:
                        yield chunk()
                if step is None:
                    break
            seg_index += 1
        if restart:
            container.close()
            yield from _pyav_chunks(r, seek=False)
            return
        if full:
            small.append(resize_center_crop(np.stack(full), r.size))
        if small:
            yield chunk()
        r.num_source_frames = seg_index
        declared = stream.frames or (round(float(stream.duration * stream.time_base) * src_fps)
                                     if stream.duration and stream.time_base else 0)
        r.declared_frames = int(declared)
    if not produced:
        raise DecodeError(f"{r.path}: no frames decoded")


class ClipReader:
    """Chunks of at most ``chunk_frames`` decoded, resampled, resized frames of one video (or of
    its [start, end) seconds): memory is bounded by the chunk, not by the video's length.

        reader = ClipReader("talk.mp4", fps=10, size=96, chunk_frames=256)
        for frames, indices in reader:   # (<=256, 96, 96, 3) uint8, source indices in the segment
            ...
        reader.source_fps, reader.num_source_frames, reader.backend   # known after the last chunk

    The decoder is chosen per codec (AV1 -> PyAV; else decord, PyAV if decord fails before its
    first chunk); ``streaming=True`` (a long video read chunk after chunk) takes PyAV first,
    whose memory stays flat. A failure after the first chunk is a DecodeError: nothing is
    silently cut.
    """

    def __init__(self, path: str, fps: float | None, size: int, start: float = 0.0, end: float | None = None,
                 chunk_frames: int = 256, streaming: bool = False):
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        self.path, self.fps, self.size, self.start, self.end = str(path), fps, size, start, end
        self.chunk_frames, self.streaming = chunk_frames, streaming
        self.source_fps, self.num_source_frames, self.backend = 0.0, 0, ""
        self.declared_frames = 0  # what the container says a whole video holds (0: it does not say)

    @property
    def truncated(self) -> tuple[int, int] | None:
        """(frames decoded, frames the container declares) when a whole video decodes short of
        what its container says (a file cut off: decoders stop quietly at the cut), else None."""
        whole = self.start == 0 and self.end is None
        if whole and self.declared_frames and self.num_source_frames < self.declared_frames - 1:
            return self.num_source_frames, self.declared_frames
        return None

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        from uva_io import storage

        path = self.path
        remote = storage.is_remote(path)
        if not storage.exists(path):
            raise DecodeError(f"{path}: file does not exist")
        if not remote and os.path.getsize(path) == 0:
            raise DecodeError(f"{path}: file is empty (0 bytes)")
        errors = []
        # a long stream goes to PyAV: decord's reader keeps memory it decoded (dmlc/decord#197, #208);
        # a URL too: PyAV reads it through a file object that seeks with range requests
        pyav_first = self.streaming or remote or probe_codec(path) in PYAV_FIRST
        order = ((_pyav_chunks,) if remote else (_pyav_chunks, _decord_chunks) if pyav_first
                 else (_decord_chunks, _pyav_chunks))
        for backend in order:
            chunks = backend(self)
            try:
                first = next(chunks)
            except DecodeError as err:
                errors.append(str(err))
                continue
            except Exception as err:  # decoders raise many types; fall through to the next one
                errors.append(f"{backend.__name__.strip('_')}: {type(err).__name__}: {err}")
                continue
            yield first
            try:
                yield from chunks
            except DecodeError:
                raise
            except Exception as err:
                raise DecodeError(f"{path}: {self.backend} failed after {len(first[0])}+ frames: "
                                  f"{type(err).__name__}: {err}") from err
            return
        raise DecodeError(f"{path}: unreadable video ({'; '.join(e.splitlines()[0][:200] for e in errors)})")


def _whole(path: str, fps: float | None, size: int, start: float, end: float | None, chunks) -> Clip:
    """A whole clip from ``chunks(reader)`` (one chunk: the reader's chunk is unbounded)."""
    reader = ClipReader(path, fps, size, start, end, chunk_frames=1 << 30)
    frames, indices = zip(*chunks(reader))
    return Clip(np.concatenate(frames), np.concatenate(indices), reader.source_fps, reader.num_source_frames,
                reader.backend)


def _pyav_clip(path: str, fps: float | None, size: int, start: float, end: float | None,
               seek: bool = True) -> Clip:
    """PyAV alone (tests and benchmarks compare seeking with decoding from the start)."""
    return _whole(path, fps, size, start, end, lambda r: _pyav_chunks(r, seek))


def _decord_clip(path: str, fps: float | None, size: int, start: float, end: float | None) -> Clip:
    """decord alone."""
    return _whole(path, fps, size, start, end, _decord_chunks)


def read_clip(
    path: str, fps: float | None, size: int, start: float = 0.0, end: float | None = None
) -> Clip:
    """Decode ``path`` (optionally only [start, end) seconds) at ``fps`` and ``size`` x ``size``,
    whole (``ClipReader`` gives it in chunks), with the decoder chosen per codec."""
    return _whole(path, fps, size, start, end, iter)


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, codec: str = "libx264",
              crf: int = 18, gop: int | None = None) -> Path:
    """(T, H, W, 3) uint8 -> video file; h264 needs even sizes, so odd ones are padded. ``gop``:
    frames between keyframes (the encoder's default when None)."""
    import av

    path = Path(path)
    t, h, w, _ = frames.shape
    ph, pw = h + h % 2, w + w % 2
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = pw, ph
        stream.pix_fmt = "rgb24" if codec == "libx264rgb" else "yuv420p"
        if codec in ("libx264", "libx264rgb"):  # libx264rgb at crf 0: lossless RGB (frames as rendered)
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        elif codec == "libsvtav1":
            stream.options = {"crf": str(max(crf, 20)), "preset": "12"}
        if gop:
            stream.codec_context.gop_size = int(gop)
        for frame in frames:
            if (ph, pw) != (h, w):
                frame = np.pad(frame, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path
