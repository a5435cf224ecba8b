"""Streaming clip batches for training without Ray: the pyarrow reader and the batching it shares with
:mod:`vidgan.ray_stream` (the Ray Data stream).

Both readers yield endless ``[B, 3, T, H, W]`` tensors (uint8, or float in [-1, 1] with ``as_float``)
from a shard directory written by ``vidgan ingest`` (a local path or a pyarrow filesystem URI such as
``s3://bucket/clips``)::

    batches = arrow_clip_batches("data/sample", 64, flip=True, seed=0)   # no Ray
    real = next(batches)

Shuffling: the shard order is shuffled every epoch and clips pass through a shuffle buffer of
``shuffle_buffer`` clips (default ``max(256, 4 * batch)``), which persists across epoch boundaries, so
batches never shrink at the end of an epoch. The reader reads row groups ahead in a thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.parquet as pq

from vidgan.shards import ShardSet, table_to_clips, verified

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

COLUMNS = ["clip", "frames", "height", "width"]


# ---------------------------------------------------------------------------------------- batching


def to_tensor(clips: np.ndarray, as_float: bool = False) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> [B, 3, T, H, W] (uint8, or float32 in [-1, 1]).

    The result is a channels-last *view* (no copy): transposing 64x64x32 uint8 clips to channels-first
    on the host cost more than reading them (10 ms per 16 clips, measured). The trainer moves the
    compact buffer to its device and lays it out there (:func:`vidgan.trainer.to_model_range`).
    """
    import torch

    x = torch.from_numpy(clips)
    if as_float:
        x = x.to(torch.float32).mul_(1 / 127.5).sub_(1.0)
    return x.permute(0, 4, 1, 2, 3)


def rebatch(
    chunks: Iterator[np.ndarray],
    batch_size: int,
    *,
    shuffle: bool,
    buffer: int,
    rng: np.random.Generator,
    flip: bool = False,
) -> Iterator[np.ndarray]:
    """Turn chunks of clips [n, T, H, W, 3] into batches of exactly ``batch_size`` clips.

    With ``shuffle``, clips go through a buffer of about ``buffer`` clips and each batch is a random
    draw from it (the buffer persists across chunk and epoch boundaries). ``flip`` mirrors each clip
    left-right with probability 1/2.
    """
    pool: np.ndarray | None = None
    n = 0
    target = max(buffer, batch_size) if shuffle else batch_size
    for chunk in chunks:
        m = len(chunk)
        if m == 0:
            continue
        if pool is None or n + m > len(pool):
            cap = max(target + m, 2 * (n + m))
            grown = np.empty((cap, *chunk.shape[1:]), np.uint8)
            if pool is not None:
                if pool.shape[1:] != chunk.shape[1:]:
                    raise ValueError(f"clip shape changed from {pool.shape[1:]} to {chunk.shape[1:]}")
                grown[:n] = pool[:n]
            pool = grown
        pool[n : n + m] = chunk
        n += m
        while n >= target:
            if shuffle:
                pick = rng.choice(n, batch_size, replace=False)
                out = pool[pick]
                # Fill the holes left below n - batch_size with the survivors of the tail.
                tail = np.arange(n - batch_size, n)
                holes = pick[pick < n - batch_size]
                fillers = np.setdiff1d(tail, pick, assume_unique=True)
                pool[holes] = pool[fillers]
            else:
                out = pool[:batch_size].copy()
                pool[: n - batch_size] = pool[batch_size:n]
            n -= batch_size
            if flip:
                mirror = np.flatnonzero(rng.random(batch_size) < 0.5)
                # reverse W as whole 3-byte pixels (a void view): twice as fast as a strided uint8 copy
                pixels = out.view(np.dtype((np.void, out.shape[-1])))[..., 0]
                pixels[mirror] = pixels[mirror][:, :, :, ::-1]
            yield out


def _read_ahead(gen: Iterator[np.ndarray], depth: int = 4) -> Iterator[np.ndarray]:
    """Run a chunk generator in a daemon thread, ``depth`` chunks ahead of the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in gen:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # handed to the consumer
            q.put(e)

    t = threading.Thread(target=work, name="vidgan-read-ahead", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def batches_from_chunks(
    shard_set: ShardSet, chunks: Iterator[np.ndarray], batch_size: int, shuffle: bool, flip: bool,
    seed: int | None, as_float: bool, shuffle_buffer: int | None,
) -> Iterator[torch.Tensor]:
    """Shuffle-buffer, flip and batch a reader's chunks of clips into tensors (both readers end here)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng(seed)
    buffer = shuffle_buffer if shuffle_buffer is not None else max(256, 4 * batch_size)
    buffer = min(buffer, shard_set.clips)  # a buffer larger than the dataset only repeats clips
    for b in rebatch(chunks, batch_size, shuffle=shuffle, buffer=buffer, rng=rng, flip=flip):
        yield to_tensor(b, as_float)


def epoch_seed(seed: int | None, epoch: int) -> int | None:
    """The shuffle seed of one epoch of a stream seeded with ``seed``."""
    return None if seed is None else seed * 1_000_003 + epoch


def resume_seed(seed: int, iteration: int) -> int:
    """The seed of a data stream (re)opened at ``iteration`` of a run seeded with ``seed``: a resumed run
    draws a fresh shuffle order instead of replaying the batches it already trained on."""
    return seed * 100_003 + iteration


# ------------------------------------------------------------------------------------ pure pyarrow


def _arrow_chunks(shard_set: ShardSet, shuffle: bool, seed: int | None) -> Iterator[np.ndarray]:
    fs, files = shard_set.fs, shard_set.files
    epoch = 0
    while True:
        rng = np.random.default_rng(epoch_seed(seed, epoch))
        order = rng.permutation(len(files)) if shuffle else range(len(files))
        got = 0
        for i in order:
            with fs.open_input_file(files[i]) as f:
                pf = pq.ParquetFile(f)
                groups = rng.permutation(pf.num_row_groups) if shuffle else range(pf.num_row_groups)
                for g in groups:
                    clips = table_to_clips(pf.read_row_group(int(g), columns=COLUMNS, use_threads=False))
                    got += len(clips)
                    yield clips
        if got == 0:
            raise ValueError(f"shard directory {shard_set.uri!r} holds no clips")
        epoch += 1


def arrow_clip_batches(
    uri: str,
    batch_size: int,
    *,
    shuffle: bool = True,
    flip: bool = False,
    seed: int | None = None,
    as_float: bool = False,
    shuffle_buffer: int | None = None,
    read_ahead: int = 4,
) -> Iterator[torch.Tensor]:
    """Endless ``[B, 3, T, H, W]`` batches read with pyarrow alone (no Ray), row groups read ahead in a thread."""
    shard_set = verified(uri)
    chunks = _arrow_chunks(shard_set, shuffle, seed)
    if read_ahead > 0:
        chunks = _read_ahead(chunks, read_ahead)
    return batches_from_chunks(shard_set, chunks, batch_size, shuffle, flip, seed, as_float, shuffle_buffer)
