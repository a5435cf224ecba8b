"""The Parquet clip-shard format: schema, encoding of clips to rows and back, and plain reading.

A shard directory holds ``shard-*.parquet`` files and a ``manifest.json``. One row is one clip:

=============  ==========  ==========================================================
column         type        meaning
=============  ==========  ==========================================================
clip           binary      raw uint8 bytes of the clip, layout T x H x W x 3 (RGB)
frames         int32       T
height         int32       H
width          int32       W
source         string      source path relative to the source root (or a URI)
start_frame    int32       index of the clip's first frame in the (resampled) source
fps            float32     frame rate of the clip
label          string      class label (parent folder name) or null
=============  ==========  ==========================================================

Directories may be local paths or any URI pyarrow's filesystems understand (``s3://``, ``gs://``,
``file://``). Nothing here imports Ray.

Readers take their shards from :func:`verified`: each shard's size and sha256 are checked against the manifest
before its first use (a flipped byte is a one-line :class:`ShardError` naming the shard, never wrong clips or
a decoder error), and manifest entries that name a file outside the directory are refused. A shard is hashed
once per version of its file, not once per reader (see :func:`verify`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vidgan.files import cache_dir, join_uri, redact_uri, resolve_fs

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SHARD_GLOB = "shard-*.parquet"

CLIP_SCHEMA = pa.schema(
    [
        pa.field("clip", pa.binary(), nullable=False),
        pa.field("frames", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("start_frame", pa.int32(), nullable=False),
        pa.field("fps", pa.float32(), nullable=False),
        pa.field("label", pa.string(), nullable=True),
    ]
)


class ManifestError(ValueError):
    """A shard directory whose manifest is missing, unreadable or inconsistent; the message names the file."""


class ShardError(ManifestError):
    """A shard that is missing, or whose size or sha256 differs from its manifest entry (truncated, corrupt
    or replaced); the message names the shard."""


@dataclass(frozen=True)
class ShardSet:
    """A shard directory as its manifest describes it (read once by :func:`describe`)."""

    uri: str  # as the caller spelled it (path or URI)
    fs: pafs.FileSystem
    path: str  # the directory on ``fs``
    manifest: dict[str, Any]
    manifest_sha256: str
    clips: int
    frames: int
    height: int
    width: int

    @property
    def files(self) -> list[str]:
        """Full paths (on :attr:`fs`) of the shards, in manifest order."""
        return [join_uri(self.path, s["file"]) for s in self.manifest["shards"]]

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        return (self.frames, self.height, self.width, 3)

    def shown(self, name: str = MANIFEST_NAME) -> str:
        """A file of the directory as the caller spelled the directory, credentials removed (for messages)."""
        return join_uri(redact_uri(self.uri), name)


def check_shard_name(name: object) -> str:
    """``name`` when it is a plain file name inside the shard directory; ValueError when it could leave it
    (``..``, an absolute path, any ``/`` or ``\\``) or is not a string."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"shard file name {name!r} is not a file name")
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"shard file name {name!r} leaves the shard directory")
    return name


def read_manifest(uri: str) -> dict[str, Any]:
    """Load ``manifest.json`` of a shard directory (FileNotFoundError when it is missing)."""
    return describe(uri).manifest


def describe(uri: str) -> ShardSet:
    """Read a shard directory's manifest once: its clip count, clip shape and shard list.

    FileNotFoundError when there is no manifest; :class:`ManifestError` when it is not a valid one.
    """
    fs, path = resolve_fs(uri)
    mpath = join_uri(path, MANIFEST_NAME)
    if fs.get_file_info(mpath).type != pafs.FileType.File:
        raise FileNotFoundError(f"no {MANIFEST_NAME} in shard directory {uri!r}: run `vidgan ingest` first")
    with fs.open_input_stream(mpath) as f:
        raw = f.read()
    try:
        manifest = json.loads(raw.decode())
        shard_list = manifest["shards"]
        t, h, w, c = (int(v) for v in manifest["clip_shape"])
        rows = [int(s["rows"]) for s in shard_list]
        clips = sum(rows)
        for s in shard_list:
            check_shard_name(s["file"])
        if c != 3 or min(t, h, w) < 1 or any(r < 0 for r in rows):
            raise ValueError("bad shard entry or clip shape")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else (str(e).splitlines() or [type(e).__name__])[0][:200]
        where = join_uri(redact_uri(uri), MANIFEST_NAME)
        raise ManifestError(f"{where} is not a valid shard manifest ({detail})") from None
    return ShardSet(uri, fs, path, manifest, hashlib.sha256(raw).hexdigest(), clips, t, h, w)


#: stamps (see :func:`_stamp`) of the shards verified in this process, or trusted from the sweep's driver
_VERIFIED: set[str] = set()
STAMP_DIR = "verified-shards"


def _sha256_fs(fs: pafs.FileSystem, path: str) -> str:
    h = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _stamp(fs: pafs.FileSystem, path: str, info: pafs.FileInfo, digest: str) -> str:
    """A name for "this file, unchanged since it was hashed, has sha256 ``digest``".

    Local files: host, inode, size, mtime and ctime, like git's index (any write changes the ctime, which
    cannot be set back); object stores: path, size and last-modified time (any put changes it). A stamp made
    on one host never matches a local file on another.
    """
    if isinstance(fs, pafs.LocalFileSystem):
        st = os.stat(path)
        parts: list[object] = ["local", socket.gethostname(), path, st.st_ino, st.st_size, st.st_mtime_ns,
                               st.st_ctime_ns]
    else:
        parts = [fs.type_name, path, info.size, info.mtime_ns]
    return hashlib.sha256(json.dumps([*parts, digest]).encode()).hexdigest()


def _stamp_file(stamp: str) -> Path:
    return cache_dir() / STAMP_DIR / stamp[:2] / stamp


#: stamp folders found writable by others (warned about once per process)
_UNTRUSTED: set[Path] = set()


def _owned(path: Path) -> bool:
    """Whether a stamp file (and the two folders holding it) is this user's and writable by nobody else: anyone
    else who can create a stamp could vouch for a shard they altered. False (with one warning per folder) when
    not; the shard is then hashed."""
    for p in (path, path.parent, path.parent.parent):
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return False
        kind_ok = stat.S_ISREG(st.st_mode) if p is path else stat.S_ISDIR(st.st_mode)
        if st.st_uid != os.getuid() or st.st_mode & 0o022 or not kind_ok:
            if path.parent.parent not in _UNTRUSTED:
                _UNTRUSTED.add(path.parent.parent)
                log.warning("ignoring shard-verification stamps under %s: %s is %s; shards are hashed "
                            "instead (make %s yours and not group/world-writable to use them)", path.parent.parent,
                            p, "not this user's" if st.st_uid != os.getuid() else
                            "writable by others" if st.st_mode & 0o022 else "not a plain file or folder",
                            path.parent.parent)
            return False
    return True


def _known(stamp: str) -> bool:
    if stamp in _VERIFIED:
        return True
    if _owned(_stamp_file(stamp)):
        _VERIFIED.add(stamp)
        return True
    return False


def _remember(stamp: str) -> None:
    _VERIFIED.add(stamp)
    path = _stamp_file(stamp)
    with contextlib.suppress(OSError):  # a read-only cache only costs a hash in the next process
        for folder in (path.parent.parent, path.parent):
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                folder.chmod(0o755)  # whatever the umask: only this user may add stamps (:func:`_owned`)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        os.fchmod(fd, 0o644)
        os.close(fd)  # empty: its name is the whole stamp


def verify(shard_set: ShardSet) -> ShardSet:
    """Check every shard's size and sha256 against the manifest; return ``shard_set``.

    A shard is hashed once, not once per reader: its stamp (:func:`_stamp`: identity, size, times, expected
    sha256) is kept for this process and on this node (``$VIDGAN_CACHE/verified-shards``, shared by the
    trials a node runs; a stamp file counts only when this user owns it and nobody else can write it or its
    folders), and the sweep's driver hands its stamps to the trials (:func:`trust`), so trials of
    a sweep over an object store do not download the dataset once more to hash it. Any rewrite of a shard
    changes its stamp and it is hashed again. Raises :class:`ShardError` naming the first shard that is
    missing, of another size or of another sha256, and :class:`ManifestError` when the manifest lists no
    clips or lacks the checksums.
    """
    if shard_set.clips == 0:
        raise ManifestError(f"{shard_set.shown()} lists no clips: nothing to read (did the ingest find any?)")
    fs = shard_set.fs
    for entry, path in zip(shard_set.manifest["shards"], shard_set.files, strict=True):
        shown = shard_set.shown(entry["file"])
        try:
            size, digest = int(entry["bytes"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError):
            raise ManifestError(f"{shard_set.shown()}: entry {entry['file']} lacks its bytes or sha256") from None
        verify_file(fs, path, size, digest, shown)
    return shard_set


def verify_file(fs: pafs.FileSystem, path: str, size: int, digest: str, shown: str) -> None:
    """Check one shard's size and sha256 (hashed once per version of the file, see :func:`verify`); raise
    :class:`ShardError` naming it as ``shown`` when it is missing, of another size or of another sha256."""
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise ShardError(f"{shown} is missing (listed in the manifest)")
    if info.size != size:
        raise ShardError(f"{shown} has {info.size} bytes, the manifest says {size}: truncated or replaced")
    stamp = _stamp(fs, path, info, digest)
    if _known(stamp):
        return
    if _sha256_fs(fs, path) != digest:
        raise ShardError(f"{shown}: sha256 differs from the manifest: the shard is corrupt or was altered")
    _remember(stamp)


def verified_stamps() -> tuple[str, ...]:
    """The stamps of every shard verified in this process (the sweep's driver hands them to its trials)."""
    return tuple(sorted(_VERIFIED))


def trust(stamps: tuple[str, ...] | list[str]) -> None:
    """Accept shards another process verified (:func:`verified_stamps`): one whose stamp still matches is
    not hashed again here; a changed shard has another stamp and is hashed."""
    _VERIFIED.update(stamps)


def verified(dataset: str | ShardSet) -> ShardSet:
    """:func:`describe` a shard directory (or take its ShardSet) and :func:`verify` its shards: what every
    reader calls before reading clips."""
    return verify(as_shard_set(dataset))


def as_shard_set(dataset: str | ShardSet) -> ShardSet:
    """``dataset`` itself when already described, else :func:`describe` of it."""
    return dataset if isinstance(dataset, ShardSet) else describe(dataset)


def shard_files(uri: str) -> list[str]:
    """Full paths (for the resolved filesystem) of the shards listed in the manifest, in order."""
    files = describe(uri).files
    if not files:
        raise FileNotFoundError(f"shard directory {uri!r} holds no shards (manifest lists none)")
    return files


def clips_to_table(
    clips: list[np.ndarray],
    sources: list[str],
    start_frames: list[int],
    fps: list[float],
    labels: list[str | None],
) -> pa.Table:
    """Encode uint8 clips [T, H, W, 3] and their metadata as a table of CLIP_SCHEMA."""
    for c in clips:
        if c.dtype != np.uint8 or c.ndim != 4 or c.shape[-1] != 3:
            raise ValueError(f"clips must be uint8 [T, H, W, 3], got {c.dtype} {c.shape}")
    return pa.table(
        {
            "clip": pa.array([np.ascontiguousarray(c).tobytes() for c in clips], pa.binary()),
            "frames": pa.array([c.shape[0] for c in clips], pa.int32()),
            "height": pa.array([c.shape[1] for c in clips], pa.int32()),
            "width": pa.array([c.shape[2] for c in clips], pa.int32()),
            "source": pa.array(sources, pa.string()),
            "start_frame": pa.array(start_frames, pa.int32()),
            "fps": pa.array(fps, pa.float32()),
            "label": pa.array(labels, pa.string()),
        },
        schema=CLIP_SCHEMA,
    )


def table_to_clips(table: pa.Table | pa.RecordBatch) -> np.ndarray:
    """Decode the ``clip`` column of a table or batch into one uint8 array [N, T, H, W, 3].

    All rows must share one shape (a shard directory is written with one --frames/--size).
    Zero-copy over the Arrow buffer where the column is a single chunk.
    """
    n = table.num_rows
    t = int(table.column("frames")[0].as_py())
    h = int(table.column("height")[0].as_py())
    w = int(table.column("width")[0].as_py())
    col = table.column("clip")
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    clip_len = t * h * w * 3
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32, count=n + 1, offset=col.offset * 4)
    if not np.all(np.diff(offsets) == clip_len):
        raise ValueError("clips of different shapes in one batch: a shard directory must hold one shape")
    data = np.frombuffer(col.buffers()[2], dtype=np.uint8, count=n * clip_len, offset=int(offsets[0]))
    return data.reshape(n, t, h, w, 3)


def iter_clips(uri: str | ShardSet, limit: int | None = None, batch_rows: int = 64) -> Iterator[np.ndarray]:
    """Yield uint8 arrays [N, T, H, W, 3] from a shard directory in manifest order, without Ray.

    Stops after ``limit`` clips in total when given. Deterministic: the same directory gives the same clips.
    The shards are :func:`verified` before the first clip.
    """
    shard_set = verified(uri)
    fs = shard_set.fs
    seen = 0
    for f in shard_set.files:
        pf = pq.ParquetFile(f, filesystem=fs)
        for batch in pf.iter_batches(batch_size=batch_rows):
            clips = table_to_clips(batch)
            if limit is not None and seen + len(clips) >= limit:
                yield clips[: limit - seen]
                return
            seen += len(clips)
            yield clips
