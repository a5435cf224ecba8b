"""Real-data I3D features, computed once per (dataset manifest, frames, n) and cached next to the dataset.

Cache file: ``<shards>/fvd_stats/i3d-k400-<manifest sha256[:16]>-f<frames>-n<n>.npz`` (plain ``.npz``, read
with ``allow_pickle=False``) holding ``features`` [n, 400] float64, ``mu``, ``sigma`` and a JSON ``meta``.
It is written to a temporary name and moved into place, so readers never see a partial file. Works for local
paths and pyarrow filesystem URIs (``s3://``, ``gs://``, ``file://``).

Compute-once: whoever finds no cache takes an exclusive file lock and looks again before computing, so
concurrent trials wait for the first one instead of computing twice. For local datasets the lock lives next
to the cache file; for remote URIs it is a local lock (``$VIDGAN_CACHE/locks``), which covers trials on one
node: for multi-node sweeps precompute with ``vidgan fvd --stats SHARDS`` before launching.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from .. import shards
from .distance import feature_stats
from .features import extract_features, load_i3d
from .i3d import MIN_FRAMES
from .weights import WEIGHTS_SHA256, cache_dir

STATS_DIR = "fvd_stats"
FEATURE_TAG = "i3d-k400"


def manifest_sha256(shards_uri: str) -> str:
    fs, path = shards.resolve(shards_uri)
    with fs.open_input_stream(shards.join(path, shards.MANIFEST_NAME)) as f:
        return hashlib.sha256(f.read()).hexdigest()


def stats_location(shards_uri: str, n: int, frames: int) -> str:
    """Path (for the dataset's filesystem) of the cached features of ``n`` clips of ``frames`` frames."""
    _, path = shards.resolve(shards_uri)
    name = f"{FEATURE_TAG}-{manifest_sha256(shards_uri)[:16]}-f{frames}-n{n}.npz"
    return shards.join(shards.join(path, STATS_DIR), name)


def dataset_shape(shards_uri: str) -> tuple[int, int]:
    """(number of clips, frames per clip) of a shard directory, from the Parquet footers and first row."""
    fs, _ = shards.resolve(shards_uri)
    files = shards.shard_files(shards_uri)
    count = sum(pq.ParquetFile(f, filesystem=fs).metadata.num_rows for f in files)
    first = pq.ParquetFile(files[0], filesystem=fs).read_row_group(0, columns=["frames"])
    return count, int(first.column("frames")[0].as_py())


def check_request(shards_uri: str, n: int, frames: int) -> None:
    """Refuse clearly what cannot give ``n`` features of ``frames`` frames."""
    if frames < MIN_FRAMES:
        raise ValueError(f"FVD needs at least {MIN_FRAMES} frames per clip, asked for {frames}")
    if n < 2:
        raise ValueError(f"FVD needs at least 2 clips, asked for {n}")
    count, t = dataset_shape(shards_uri)
    if count < n:
        raise ValueError(f"dataset {shards_uri!r} holds {count} clips, fewer than the {n} requested")
    if t < frames:
        raise ValueError(f"dataset {shards_uri!r} has clips of {t} frames, fewer than the {frames} requested")


@contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock_path`` (created if needed), held for the ``with`` body."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _lock_path(fs: pafs.FileSystem, path: str) -> Path:
    if isinstance(fs, pafs.LocalFileSystem):
        local = Path(path + ".lock")
        parent = local.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if os.access(parent, os.W_OK):
            return local
    key = hashlib.sha256(f"{fs.type_name}:{path}".encode()).hexdigest()[:24]
    return cache_dir() / "locks" / f"{key}.lock"


def read_npz(fs: pafs.FileSystem, path: str) -> dict[str, np.ndarray] | None:
    """The arrays of an ``.npz`` file, or None when it does not exist."""
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_file(path) as f:
        data = f.read()
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_npz_atomic(fs: pafs.FileSystem, path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` under a temporary name in the same directory, then move it into place."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(buf.getvalue())
    fs.move(tmp, path)


def compute_once(fs: pafs.FileSystem, path: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The cached arrays at ``path``, computing and writing them under a lock when absent."""
    found = read_npz(fs, path)
    if found is not None:
        return found
    with file_lock(_lock_path(fs, path)):
        found = read_npz(fs, path)  # someone else may have finished while we waited
        if found is not None:
            return found
        arrays = compute()
        try:
            write_npz_atomic(fs, path, arrays)
        except OSError as e:  # a read-only dataset: the result is still right, only not cached
            warnings.warn(f"could not cache FVD statistics at {path}: {e}", RuntimeWarning, stacklevel=2)
        return arrays


def real_features(
    shards_uri: str,
    n: int,
    frames: int,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    weights_path: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """I3D features ``[n, 400]`` (float64) of the first ``n`` clips of a shard directory, first ``frames``
    frames of each; computed once and cached next to the dataset (see the module docstring)."""
    check_request(shards_uri, n, frames)
    fs, _ = shards.resolve(shards_uri)
    path = stats_location(shards_uri, n, frames)
    meta = {
        "manifest_sha256": manifest_sha256(shards_uri),
        "frames": frames,
        "n": n,
        "weights_sha256": WEIGHTS_SHA256,
        "features": FEATURE_TAG,
    }

    def compute() -> dict[str, np.ndarray]:
        model = load_i3d(device, weights_path)
        clips = (c[:, :frames] for c in shards.iter_clips(shards_uri, limit=n))
        feats = extract_features(model, clips, batch_size)
        mu, sigma = feature_stats(feats)
        return {"features": feats, "mu": mu, "sigma": sigma, "meta": np.array(json.dumps(meta, sort_keys=True))}

    arrays = compute_once(fs, path, compute)
    feats = arrays["features"]
    stored = json.loads(str(arrays["meta"]))
    if stored != meta or feats.shape != (n, 400):
        raise ValueError(f"cached FVD statistics {path} do not match the request: {stored} vs {meta}")
    return feats
