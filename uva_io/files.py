"""Atomic file writes: a file is whole or absent, whoever reads it and whenever a job dies.

Every writer of a file that another process or a resumed job reads (shards, indexes,
manifests, evaluation reports, demonstration records) goes through ``atomic_write``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to a temp name beside ``path``, fsync, rename: the file is whole or absent."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def npy_bytes(arr: np.ndarray) -> bytes:
    """An array as the bytes of a ``.npy`` file (never pickled)."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()
