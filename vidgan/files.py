"""Small file helpers shared by the data, training and FVD code: checksums, atomic writes, filesystems.

Every file vidgan writes for keeps (shards, manifests, checkpoints, cached weights and statistics, sweep
state) goes through :func:`atomic_write` (local) or :func:`atomic_write_fs` (any pyarrow filesystem):
readers see the old file or the new one, never half of one. Temporary files are named
``.<name>.<random>.vidgan-tmp`` in the target's folder, so :func:`is_own_temp` tells ours apart from
anything a user put there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow.fs as pafs

TMP_SUFFIX = ".vidgan-tmp"
CACHE_ENV = "VIDGAN_CACHE"


def cache_dir() -> Path:
    """Where vidgan caches what it can rebuild (converted I3D weights, statistics locks, verified-shard
    stamps): ``$VIDGAN_CACHE`` if set, else ``~/.cache/vidgan``. Deleting it only costs time."""
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "vidgan"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def is_own_temp(name: str, target: str | None = None) -> bool:
    """Whether ``name`` is a temporary file :func:`atomic_write` made (for ``target``, when given)."""
    if not (name.startswith(".") and name.endswith(TMP_SUFFIX)):
        return False
    return target is None or name.startswith(f".{target}.")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Write a local file whole or not at all: ``write(f)`` fills a temp file in the same folder, which is
    flushed, fsynced and renamed over ``path``. On any error the temp file is removed and ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """:func:`atomic_write` of a bytes object."""
    return atomic_write(path, lambda f: f.write(data))


# ------------------------------------------------------------------------------ pyarrow filesystems


def resolve_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path (made absolute) or a pyarrow filesystem URI (``s3://...``)."""
    import pyarrow.fs as pafs

    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def join_uri(base: str, name: str) -> str:
    """Join a folder (local path or URI) and a name with ``/``."""
    return base.rstrip("/") + "/" + name


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """(``uri`` without ``user:password@``, user, password), both unquoted; (uri, None, None) when it has none.

    Credentials in URIs (``http://user:pass@host``, ``s3://key:secret@bucket``) must never be printed or
    logged: show :func:`redact_uri` of a URI instead.
    """
    from urllib.parse import unquote, urlsplit, urlunsplit

    if "://" not in uri:
        return uri, None, None
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, None, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, sep, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), unquote(user), unquote(password) if sep else None


def redact_uri(uri: str) -> str:
    """``uri`` without its userinfo (``user:password@``), safe to print and log."""
    return split_userinfo(uri)[0]


def atomic_write_fs(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write a file on a pyarrow filesystem whole or not at all (local: :func:`atomic_write`; object stores:
    a temporary name in the same folder, then a move)."""
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        atomic_write_bytes(path, data)
        return
    parent, name = path.rsplit("/", 1)
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}{TMP_SUFFIX}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)
