"""Real-data I3D features, computed once per (dataset manifest, frames, n) and cached next to the dataset.

Cache file: ``<shards>/fvd_stats/i3d-k400-<manifest sha256[:16]>-f<frames>-n<n>.npz`` (plain ``.npz``, read
with ``allow_pickle=False``) holding ``features`` [n, 400] float64, ``mu``, ``sigma`` and a JSON ``meta``.
It is written to a temporary name and moved into place, so readers never see a partial file. Works for local
paths and pyarrow filesystem URIs (``s3://``, ``gs://``, ``file://``).

Compute-once: whoever finds no cache takes an exclusive file lock and looks again before computing, so
concurrent trials wait for the first one instead of computing twice (and removes the cache's temporary files
that a killed run left). The cache is keyed on the manifest's sha256, which covers every shard's sha256: the
shards are verified (:func:`vidgan.shards.verify`, once per version of each file) before a cached answer is used,
so a damaged real shard is noticed. For local datasets the lock lives next
to the cache file; for remote URIs it is a local lock (``$VIDGAN_CACHE/locks``), which covers trials on one
node: for multi-node sweeps precompute with ``vidgan fvd --stats SHARDS`` before launching.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import torch

from .. import shards
from ..files import atomic_write_fs, join_uri, remove_stale_temps
from .distance import feature_stats
from .features import extract_features, load_i3d
from .i3d import MIN_FRAMES
from .weights import WEIGHTS_SHA256, cache_dir

STATS_DIR = "fvd_stats"
FEATURE_TAG = "i3d-k400"


def stats_location(dataset: str | shards.ShardSet, n: int, frames: int) -> str:
    """Path (for the dataset's filesystem) of the cached features of ``n`` clips of ``frames`` frames."""
    shard_set = shards.as_shard_set(dataset)
    name = f"{FEATURE_TAG}-{shard_set.manifest_sha256[:16]}-f{frames}-n{n}.npz"
    return join_uri(join_uri(shard_set.path, STATS_DIR), name)


def stats_shown(dataset: str | shards.ShardSet, n: int, frames: int) -> str:
    """:func:`stats_location` as the caller spelled the dataset (``s3://bucket/...``, no credentials), for messages."""
    shard_set = shards.as_shard_set(dataset)
    return join_uri(shard_set.shown(STATS_DIR), stats_location(shard_set, n, frames).rsplit("/", 1)[1])


def check_request(dataset: str | shards.ShardSet, n: int, frames: int) -> None:
    """Refuse clearly what cannot give ``n`` features of ``frames`` frames."""
    shard_set = shards.as_shard_set(dataset)
    if frames < MIN_FRAMES:
        raise ValueError(f"FVD needs at least {MIN_FRAMES} frames per clip, asked for {frames}")
    if n < 2:
        raise ValueError(f"FVD needs at least 2 clips, asked for {n}")
    if shard_set.clips < n:
        raise ValueError(f"dataset {shard_set.uri!r} holds {shard_set.clips} clips, fewer than the {n} requested")
    if shard_set.frames < frames:
        raise ValueError(
            f"dataset {shard_set.uri!r} has clips of {shard_set.frames} frames, fewer than the {frames} requested"
        )


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
    """The arrays of an ``.npz`` file, or None when it does not exist; ValueError naming it when it is damaged."""
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_file(path) as f:
        data = f.read()
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise ValueError(f"cached FVD statistics {path} are unreadable ({detail}); they are not used") from None


def write_npz_atomic(fs: pafs.FileSystem, path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` whole or not at all."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_fs(fs, path, buf.getvalue())


def compute_once(fs: pafs.FileSystem, path: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The cached arrays at ``path``, computing and writing them under a lock when absent."""
    found = read_npz(fs, path)
    if found is not None:
        return found
    with file_lock(_lock_path(fs, path)):
        found = read_npz(fs, path)  # someone else may have finished while we waited
        if found is not None:
            return found
        if isinstance(fs, pafs.LocalFileSystem):  # the lock's holder: temp files of the cache are a killed run's
            folder, name = os.path.split(path)
            remove_stale_temps(folder, name)
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
    on_clips: Callable[[int], None] | None = None,
) -> np.ndarray:
    """I3D features ``[n, 400]`` (float64) of the first ``n`` clips of a shard directory, first ``frames``
    frames of each; computed once and cached next to the dataset (see the module docstring).
    ``on_clips(k)`` is called as each batch of ``k`` clips is done (not at all when the cache answers)."""
    shard_set = shards.describe(shards_uri)
    check_request(shard_set, n, frames)
    fs = shard_set.fs
    path = stats_location(shard_set, n, frames)
    meta = {
        "manifest_sha256": shard_set.manifest_sha256,
        "frames": frames,
        "n": n,
        "weights_sha256": WEIGHTS_SHA256,
        "features": FEATURE_TAG,
    }

    # The cache is keyed on the manifest, which lists every shard's sha256: it stands for those shards only once
    # they are verified, so they are (hashed once per version of each file), also when the cache answers.
    shards.verify(shard_set)

    def compute() -> dict[str, np.ndarray]:
        model = load_i3d(device, weights_path)
        clips = (c[:, :frames] for c in shards.iter_clips(shard_set, limit=n))
        feats = extract_features(model, clips, batch_size, on_batch=on_clips)
        mu, sigma = feature_stats(feats)
        return {"features": feats, "mu": mu, "sigma": sigma, "meta": np.array(json.dumps(meta, sort_keys=True))}

    arrays = compute_once(fs, path, compute)
    feats = arrays["features"]
    stored = json.loads(str(arrays["meta"]))
    if stored != meta or feats.shape != (n, 400):
        raise ValueError(f"cached FVD statistics {path} do not match the request: {stored} vs {meta}")
    return feats
