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

Batches are assembled ahead of the consumer: a background thread draws them from the shuffle buffer,
flips them and gathers each straight into its own (on CUDA machines page-locked) buffer, keeping up to
``prefetch`` ready batches in a bounded queue, so ``next()`` on the training thread is only the real wait
and the trainer's host-to-device copy can be asynchronous. ``uint8 -> float`` happens in one place,
:func:`vidgan.trainer.to_model_range` (on the device when training).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pyarrow.parquet as pq

from vidgan.shards import ShardSet, table_to_clips, verified

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

COLUMNS = ["clip", "frames", "height", "width"]
T = TypeVar("T")


# ---------------------------------------------------------------------------------------- batching


def to_tensor(clips: np.ndarray | torch.Tensor, as_float: bool = False) -> torch.Tensor:
    """uint8 [B, T, H, W, 3] -> [B, 3, T, H, W] (uint8, or float32 in [-1, 1]).

    uint8: a channels-last *view* (no copy): transposing 64x64x32 uint8 clips to channels-first on the
    host cost more than reading them (10 ms per 16 clips, measured). The trainer moves the compact
    buffer to its device and lays it out there (:func:`vidgan.trainer.to_model_range`, which also does
    the float conversion, for ``as_float`` too: one definition of the value range).
    """
    import torch

    x = (clips if isinstance(clips, torch.Tensor) else torch.from_numpy(clips)).permute(0, 4, 1, 2, 3)
    if as_float:
        from vidgan.trainer import to_model_range

        return to_model_range(x, torch.device("cpu"))
    return x


def _pixels(a: np.ndarray) -> np.ndarray:
    """[..., W, C] uint8 (C-contiguous last axis) as [..., W] of whole C-byte pixels (a void view)."""
    return a.view(np.dtype((np.void, a.shape[-1])))[..., 0]


class ShuffleBuffer:
    """The clips waiting to be drawn into batches (see :func:`rebatch`).

    Chunks are copied in; each batch is drawn at random (or in order without ``shuffle``) and gathered,
    mirrored where ``flip`` says so, straight into the array the caller hands :meth:`take` (one copy per
    clip: no intermediate batch, no separate flip pass); the holes a draw leaves are filled from the tail.
    """

    def __init__(self, batch_size: int, *, shuffle: bool, buffer: int, rng: np.random.Generator,
                 flip: bool = False) -> None:
        self.batch_size, self.shuffle, self.rng, self.flip = batch_size, shuffle, rng, flip
        self.target = max(buffer, batch_size) if shuffle else batch_size
        self.pool: np.ndarray | None = None
        self.n = 0

    @property
    def clip_shape(self) -> tuple[int, ...]:
        if self.pool is None:
            raise RuntimeError("no clips added yet")
        return self.pool.shape[1:]

    def add(self, chunk: np.ndarray) -> None:
        m = len(chunk)
        if m == 0:
            return
        if self.pool is not None and self.pool.shape[1:] != chunk.shape[1:]:
            raise ValueError(f"clip shape changed from {self.pool.shape[1:]} to {chunk.shape[1:]}")
        if self.pool is None or self.n + m > len(self.pool):
            # n < target between draws, so target + m always holds the buffer plus a chunk of m
            grown = np.empty((self.target + m, *chunk.shape[1:]), np.uint8)
            if self.pool is not None:
                grown[: self.n] = self.pool[: self.n]
            self.pool = grown
        self.pool[self.n : self.n + m] = chunk
        self.n += m

    def ready(self) -> bool:
        return self.n >= self.target

    def take(self, out: np.ndarray) -> np.ndarray:
        """Draw one batch into ``out`` (uint8 [batch_size, T, H, W, C], C-contiguous) and return it."""
        b, n, pool = self.batch_size, self.n, self.pool
        if pool is None or n < b:
            raise RuntimeError(f"{n} clips buffered, a batch needs {b}")
        if out.shape != (b, *pool.shape[1:]) or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous uint8 {(b, *pool.shape[1:])}, got {out.dtype} {out.shape}")
        pick = self.rng.choice(n, b, replace=False) if self.shuffle else np.arange(b)
        mirror = (self.rng.random(b) < 0.5) if self.flip else np.zeros(b, bool)
        src_px, out_px = _pixels(pool), _pixels(out)
        for i, (p, m) in enumerate(zip(pick.tolist(), mirror.tolist(), strict=True)):
            if m:  # reverse W as whole pixels: twice as fast as a strided uint8 copy
                np.copyto(out_px[i], src_px[p, :, :, ::-1])
            else:
                np.copyto(out[i], pool[p])
        if self.shuffle:
            # Fill the holes left below n - b with the survivors of the tail.
            holes = pick[pick < n - b]
            fillers = np.setdiff1d(np.arange(n - b, n), pick, assume_unique=True)
            for h, f in zip(holes.tolist(), fillers.tolist(), strict=True):
                np.copyto(pool[h], pool[f])
        else:
            pool[: n - b] = pool[b:n]
        self.n -= b
        return out


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
    sb = ShuffleBuffer(batch_size, shuffle=shuffle, buffer=buffer, rng=rng, flip=flip)
    for chunk in chunks:
        sb.add(chunk)
        while sb.ready():
            yield sb.take(np.empty((batch_size, *sb.clip_shape), np.uint8))


def _read_ahead(gen: Iterator[T], depth: int = 4, name: str = "vidgan-read-ahead") -> Iterator[T]:
    """Run a generator in a daemon thread, up to ``depth`` items ahead of the consumer (a bounded queue).

    Exceptions reach the consumer. Closing this iterator stops the thread and waits for it, and the
    thread closes ``gen`` itself (its cleanup, e.g. a Ray iterator's, runs before this returns).
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in gen:
                if not put(item):
                    return
            put(done)
        except BaseException as e:  # handed to the consumer
            put(e)
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()

    t = threading.Thread(target=work, name=name, daemon=True)
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
        t.join()


#: ready batches the background producer keeps ahead of the consumer (each batch_size x clip bytes)
PREFETCH = 3


def _assemble(chunks: Iterator[np.ndarray], sb: ShuffleBuffer, as_float: bool, pin: bool) -> Iterator[torch.Tensor]:
    import torch

    try:
        for chunk in chunks:
            sb.add(chunk)
            while sb.ready():
                # a fresh buffer per batch: the consumer may keep it, and the CUDA host allocator reuses a
                # page-locked block only after the copies queued from it have finished. Unpinned: numpy's
                # allocation (huge pages where the kernel allows) cost 2-6 ms less per 25 MB batch than torch's.
                shape = (sb.batch_size, *sb.clip_shape)
                if pin:
                    out = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
                    sb.take(out.numpy())
                else:
                    out = torch.from_numpy(sb.take(np.empty(shape, np.uint8)))
                yield to_tensor(out, as_float)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def batches_from_chunks(
    shard_set: ShardSet, chunks: Iterator[np.ndarray], batch_size: int, shuffle: bool, flip: bool,
    seed: int | None, as_float: bool, shuffle_buffer: int | None, *, pin_memory: bool | None = None,
    prefetch: int = PREFETCH,
) -> Iterator[torch.Tensor]:
    """Shuffle-buffer, flip and batch a reader's chunks of clips into tensors (both readers end here).

    With ``prefetch`` > 0 a background thread assembles up to ``prefetch`` batches ahead of the consumer.
    ``pin_memory`` (default: when CUDA is available) gathers each uint8 batch straight into page-locked
    memory, so the trainer's ``non_blocking`` copy to the GPU is asynchronous.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    import torch

    pin = (torch.cuda.is_available() if pin_memory is None else pin_memory) and not as_float
    rng = np.random.default_rng(seed)
    buffer = shuffle_buffer if shuffle_buffer is not None else max(256, 4 * batch_size)
    buffer = min(buffer, shard_set.clips)  # a buffer larger than the dataset only repeats clips
    sb = ShuffleBuffer(batch_size, shuffle=shuffle, buffer=buffer, rng=rng, flip=flip)
    batches = _assemble(chunks, sb, as_float, pin)
    return _read_ahead(batches, prefetch, name="vidgan-batches") if prefetch > 0 else batches


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
    prefetch: int = PREFETCH,
    pin_memory: bool | None = None,
) -> Iterator[torch.Tensor]:
    """Endless ``[B, 3, T, H, W]`` batches read with pyarrow alone (no Ray): row groups read ahead in one
    thread (``read_ahead``), batches assembled ahead in another (``prefetch``, ``pin_memory``: see
    :func:`batches_from_chunks`); 0 runs that stage on the consumer's thread."""
    shard_set = verified(uri)
    chunks = _arrow_chunks(shard_set, shuffle, seed)
    if read_ahead > 0:
        chunks = _read_ahead(chunks, read_ahead)
    return batches_from_chunks(shard_set, chunks, batch_size, shuffle, flip, seed, as_float, shuffle_buffer,
                               pin_memory=pin_memory, prefetch=prefetch)
