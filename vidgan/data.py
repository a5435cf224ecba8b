"""Streaming clip batches for training: Ray Data, plain pyarrow, and Tune trial resources.

Both readers yield endless ``[B, 3, T, H, W]`` tensors (uint8, or float in [-1, 1] with ``as_float``)
from a shard directory written by ``vidgan ingest`` (a local path or a pyarrow filesystem URI such as
``s3://bucket/clips``)::

    batches = ray_clip_batches("s3://bucket/ucf101-64", 64, flip=True, seed=0)   # Ray Data
    batches = arrow_clip_batches("data/sample", 64, flip=True, seed=0)           # no Ray
    real = next(batches)

Shuffling: the shard order is shuffled every epoch (Ray Data's file shuffle / the reader's own) and
clips pass through a shuffle buffer of ``shuffle_buffer`` clips (default ``max(256, 4 * batch)``),
which persists across epoch boundaries, so batches never shrink at the end of an epoch.

Epoch boundaries (Ray): every epoch is a new execution of the dataset, which took seconds to start
here. When epoch ``e`` starts, epoch ``e + 1`` is opened in a background thread (its first block is
read), so the next epoch is already streaming when this one ends; ``benchmarks/data_stream.py``
reports the largest gap between batches. The pyarrow reader reads ahead in a thread too.

Ray Data inside Ray Tune trials: a trial's own CPUs are reserved in its placement group, and Ray
Data's tasks are not placed there by default (they are scheduled ``SPREAD`` outside any placement
group), so with trials holding every CPU a trial that streams data waits forever. The sweep service
therefore asks for an extra *data bundle* per trial::

    tune.with_resources(trainable, vidgan.data.trial_resources(cpu=1, gpu=0.5, data_cpu=1))

which reserves ``[{"CPU": cpu, "GPU": gpu}, {"CPU": data_cpu}]`` (bundle 0 runs the trainable). A
trial calls nothing special: :func:`ray_clip_batches` detects that it runs in a placement group with
a data bundle and schedules all of the dataset's tasks in that bundle (via the process's
``DataContext``, which only the trial's process sees), and caps Data's CPU budget at ``data_cpu``.
Data therefore never competes with other trials, and a trial that holds its placement group can
always make progress. A trial without a data bundle gets a warning (it may hang on a full cluster);
use :func:`arrow_clip_batches` there, which needs no Ray resources.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from vidgan.shards import read_manifest, resolve, shard_files, table_to_clips

if TYPE_CHECKING:
    import torch
    from ray import tune

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


def _batches(
    uri: str, chunks: Iterator[np.ndarray], batch_size: int, shuffle: bool, flip: bool, seed: int | None,
    as_float: bool, shuffle_buffer: int | None,
) -> Iterator[torch.Tensor]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng(seed)
    buffer = shuffle_buffer if shuffle_buffer is not None else max(256, 4 * batch_size)
    total = sum(s["rows"] for s in read_manifest(uri)["shards"])
    buffer = min(buffer, total)  # a buffer larger than the dataset only repeats clips
    for b in rebatch(chunks, batch_size, shuffle=shuffle, buffer=buffer, rng=rng, flip=flip):
        yield to_tensor(b, as_float)


def _epoch_seed(seed: int | None, epoch: int) -> int | None:
    return None if seed is None else seed * 1_000_003 + epoch


# ------------------------------------------------------------------------------------ pure pyarrow


def _arrow_chunks(uri: str, shuffle: bool, seed: int | None) -> Iterator[np.ndarray]:
    fs, _ = resolve(uri)
    files = shard_files(uri)
    epoch = 0
    while True:
        rng = np.random.default_rng(_epoch_seed(seed, epoch))
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
            raise ValueError(f"shard directory {uri!r} holds no clips")
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
    **kw: Any,
) -> Iterator[torch.Tensor]:
    """Endless ``[B, 3, T, H, W]`` batches read with pyarrow alone (no Ray), row groups read ahead in a thread."""
    if kw:
        raise TypeError(f"arrow_clip_batches: unknown options {sorted(kw)}")
    chunks = _arrow_chunks(uri, shuffle, seed)
    if read_ahead > 0:
        chunks = _read_ahead(chunks, read_ahead)
    return _batches(uri, chunks, batch_size, shuffle, flip, seed, as_float, shuffle_buffer)


# ----------------------------------------------------------------------------------------- Ray Data


def trial_resources(cpu: float = 1.0, gpu: float = 0.0, data_cpu: float = 1.0) -> tune.PlacementGroupFactory:
    """A Tune trial's resource request: bundle 0 for the trainable, bundle 1 for its Ray Data tasks.

    ``data_cpu=0`` requests no data bundle (then stream with :func:`arrow_clip_batches`).
    """
    from ray import tune

    if min(cpu, gpu, data_cpu) < 0:
        raise ValueError(f"resources must be >= 0, got cpu={cpu} gpu={gpu} data_cpu={data_cpu}")
    head = {k: v for k, v in (("CPU", cpu), ("GPU", gpu)) if v > 0}
    bundles = [head] + ([{"CPU": float(data_cpu)}] if data_cpu > 0 else [])
    return tune.PlacementGroupFactory(bundles, strategy="PACK")


def data_placement() -> tuple[Any, float] | None:
    """(scheduling strategy, CPUs) of the current placement group's data bundles, or None outside one."""
    from ray.util import get_current_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = get_current_placement_group()
    if pg is None:
        return None
    specs = pg.bundle_specs
    data = [i for i, b in enumerate(specs) if i > 0 and b.get("CPU", 0) > 0]
    if not data:
        warnings.warn(
            "ray_clip_batches runs in a placement group without a data bundle: Ray Data's tasks need CPUs "
            "outside it and may wait forever on a full cluster. Request resources with "
            "vidgan.data.trial_resources(...) or use arrow_clip_batches.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    strategy = PlacementGroupSchedulingStrategy(
        pg, placement_group_bundle_index=data[0] if len(data) == 1 else -1,
        placement_group_capture_child_tasks=True,
    )
    return strategy, float(sum(specs[i]["CPU"] for i in data))


def _configure_context(placement: tuple[Any, float] | None) -> float:
    """Point this process's DataContext at the data bundle; returns the CPUs each read task asks for."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # an endless stream: one bar per epoch is noise
    if placement is None:
        return 1.0
    strategy, cpus = placement
    # Datasource V2 lists Parquet footers with actors pinned to SPREAD scheduling, outside any placement
    # group: in a full cluster they never start (seen here). V1 schedules every task with the strategy below.
    ctx.use_datasource_v2 = False
    with warnings.catch_warnings():
        # Deprecated (removal announced for 2027) but the only switch that reaches every task and actor
        # a dataset starts; pinned Ray 2.60 honours it (verified in map_operator / parquet_datasource).
        warnings.simplefilter("ignore")
        ctx.scheduling_strategy = strategy
        ctx.scheduling_strategy_large_args = strategy
    ctx.execution_options.resource_limits = ray.data.ExecutionResources(cpu=cpus)
    return min(1.0, cpus)


def _ray_chunks(uri: str, shuffle: bool, seed: int | None, prefetch_epochs: bool) -> Iterator[np.ndarray]:
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    fs, _ = resolve(uri)
    files = shard_files(uri)
    num_cpus = _configure_context(data_placement())

    def open_epoch(epoch: int) -> tuple[Any, Iterator[Any]]:
        shuffle_cfg = ray.data.FileShuffleConfig(seed=_epoch_seed(seed, epoch)) if shuffle else None
        ds = ray.data.read_parquet(files, filesystem=fs, columns=COLUMNS, shuffle=shuffle_cfg, num_cpus=num_cpus)
        it = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2))
        return next(it, None), it

    pool = ThreadPoolExecutor(1, thread_name_prefix="vidgan-next-epoch")
    opener: Callable[[int], Any] = (lambda e: pool.submit(open_epoch, e)) if prefetch_epochs else open_epoch
    try:
        pending = opener(0)
        epoch = 0
        while True:
            first, it = pending.result() if prefetch_epochs else pending
            epoch += 1
            if prefetch_epochs:
                pending = opener(epoch)
            if first is None:
                raise ValueError(f"shard directory {uri!r} holds no clips")
            yield table_to_clips(first)
            for block in it:
                if block.num_rows:
                    yield table_to_clips(block)
            if not prefetch_epochs:
                pending = opener(epoch)
    finally:
        # wait for an epoch being opened: a thread still inside Ray after ray.shutdown() aborts the process
        pool.shutdown(wait=True, cancel_futures=True)


def ray_clip_batches(
    uri: str,
    batch_size: int,
    *,
    shuffle: bool = True,
    flip: bool = False,
    seed: int | None = None,
    as_float: bool = False,
    shuffle_buffer: int | None = None,
    prefetch_epochs: bool = True,
    **kw: Any,
) -> Iterator[torch.Tensor]:
    """Endless ``[B, 3, T, H, W]`` batches streamed with Ray Data (``read_parquet`` + file shuffle).

    Starts a local Ray (or joins ``RAY_ADDRESS``) when none is initialised. Inside a Tune trial
    requested with :func:`trial_resources`, all of the dataset's tasks run in the trial's data bundle.
    """
    if kw:
        raise TypeError(f"ray_clip_batches: unknown options {sorted(kw)}")
    chunks = _ray_chunks(uri, shuffle, seed, prefetch_epochs)
    return _batches(uri, chunks, batch_size, shuffle, flip, seed, as_float, shuffle_buffer)
