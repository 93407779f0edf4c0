"""Where shard sets and inputs live: local paths, or URLs (s3://, gs://, ...) through fsspec.

    storage.join("s3://bucket/latents", "index.json")   # -> "s3://bucket/latents/index.json"
    storage.read_text(url); storage.write_bytes(url, data); storage.exists(url)
    storage.find_files("s3://bucket/videos")   # every object under a prefix, as URLs
    with storage.local_copy("s3://bucket/ep.mp4") as path: ...   # a temporary local file

Visibility: a remote object appears only when its upload completes (one PUT, or a completed
multipart upload), so a remote write is whole or absent like a local ``atomic_write``. Endpoint
and credentials come from the standard variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION) or the tools' own config files.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

from uva_io.files import atomic_write


def is_remote(path: str | Path) -> bool:
    """A URL with a scheme other than file:// (local paths and file:// are local)."""
    text = str(path)
    return "://" in text and not text.startswith("file://")


def join(base: str | Path, *names: str) -> str:
    if is_remote(base):
        return posixpath.join(str(base).rstrip("/"), *names)
    return str(Path(base, *names))


def filesystem(url: str):
    """(fsspec filesystem, path inside it) for a URL; a clear error when its backend is missing."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as err:
        raise ValueError(f"{url}: reading this kind of URL needs a package that is not installed ({err})") from err


def exists(path: str | Path) -> bool:
    if not is_remote(path):
        return Path(path).exists()
    fs, p = filesystem(str(path))
    return fs.exists(p)


def read_bytes(path: str | Path) -> bytes:
    if not is_remote(path):
        return Path(path).read_bytes()
    fs, p = filesystem(str(path))
    try:
        return fs.cat_file(p)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None


def read_text(path: str | Path) -> str:
    return read_bytes(path).decode()


def write_bytes(path: str | Path, data: bytes | str) -> None:
    """Whole or absent: a local temp file renamed, or one remote PUT."""
    if not is_remote(path):
        atomic_write(path, data)
        return
    fs, p = filesystem(str(path))
    fs.pipe_file(p, data.encode() if isinstance(data, str) else data)


def upload(local: str | Path, path: str | Path) -> None:
    """Copy a finished local file to ``path`` (a rename when ``path`` is local)."""
    if not is_remote(path):
        os.replace(local, path)
        return
    fs, p = filesystem(str(path))
    fs.put_file(str(local), p)


def listdir(path: str | Path) -> set[str]:
    """Names in a folder or under a URL prefix, in one listing (empty when it does not exist)."""
    if not is_remote(path):
        return set(os.listdir(path)) if Path(path).is_dir() else set()
    fs, p = filesystem(str(path))
    fs.invalidate_cache(p)
    try:
        return {posixpath.basename(e.rstrip("/")) for e in fs.ls(p, detail=False)}
    except FileNotFoundError:
        return set()


def isdir(path: str | Path) -> bool:
    """A local folder, or a URL prefix with objects under it."""
    if not is_remote(path):
        return Path(path).is_dir()
    fs, p = filesystem(str(path))
    return fs.isdir(p)


def find_files(path: str | Path) -> list[str]:
    """Every file under a folder or URL prefix, recursively, as paths (or URLs), sorted."""
    if not is_remote(path):
        return sorted(str(p) for p in Path(path).rglob("*") if p.is_file())
    fs, p = filesystem(str(path))
    scheme = str(path).split("://", 1)[0]
    return sorted(f"{scheme}://{f.lstrip('/')}" if "://" not in f else f for f in fs.find(p))


def makedirs(path: str | Path) -> None:
    """A local folder (object stores have no folders to make)."""
    if not is_remote(path):
        Path(path).mkdir(parents=True, exist_ok=True)


def open_read(path: str | Path) -> IO[bytes]:
    """A binary file object; a remote one seeks with range requests (a decoder reaching one
    episode of a shared video reads only the bytes around it)."""
    if not is_remote(path):
        return open(path, "rb")
    fs, p = filesystem(str(path))
    return fs.open(p, "rb")


@contextlib.contextmanager
def local_copy(path: str | Path, suffix: str | None = None) -> Iterator[str]:
    """A local path for ``path``: itself when local, else a temporary download removed after."""
    if not is_remote(path):
        yield str(path)
        return
    folder = tempfile.mkdtemp(prefix="uva_fetch_")
    local = os.path.join(folder, "input" + (suffix if suffix is not None else posixpath.splitext(str(path))[1]))
    try:
        fs, p = filesystem(str(path))
        try:
            fs.get_file(p, local)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: file does not exist") from None
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **kw) -> IO[bytes]:
    """webdataset's opener for URLs it has no handler of its own for (s3://, gs://, az://)."""
    if mode[0] != "r":
        raise ValueError(f"{url}: webdataset streams are read here, not written")
    return open_read(url)


def register_webdataset_schemes() -> None:
    """Let webdataset read s3://, gs://, az:// and http(s):// shards through fsspec (no curl or
    gsutil needed)."""
    import importlib

    module = importlib.import_module("webdataset.gopen")  # the module (the package re-exports a function of that name)
    for scheme in ("s3", "gs", "gcs", "az", "abfs", "http", "https"):
        module.gopen_schemes[scheme] = gopen_fsspec
