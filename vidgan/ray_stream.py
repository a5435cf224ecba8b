"""Streaming clip batches with Ray Data (``read_parquet`` + file shuffle), for Tune trials and clusters.

Same batches as :func:`vidgan.data.arrow_clip_batches` (same shuffle buffer, flip and tensors)::

    batches = ray_clip_batches("s3://bucket/ucf101-64", 64, flip=True, seed=0)

Epoch boundaries: every execution of the dataset took about a second to start here, so one execution
streams as many whole epochs as it takes to reach :data:`CLIPS_PER_EXECUTION` clips, each epoch its own
seeded shuffle of the shard files. :data:`OPEN_AHEAD_CLIPS` before execution ``r`` ends, ``r + 1`` is opened
in a background thread (its first block is read), so the next one is already starting when this one
ends; ``benchmarks/data_stream.py`` reports the largest gap.

Ray Data inside Ray Tune trials: a trial's own CPUs are reserved in its placement group, and Ray Data's
tasks are not placed there by default (they are scheduled ``SPREAD`` outside any placement group), so with
trials holding every CPU a trial that streams data waits forever. The sweep service therefore asks for an
extra *data bundle* per trial (``tune_jobs.resources.trial_resources``): ``[{"CPU": cpu, "GPU": gpu},
{"CPU": data_cpu}]``, bundle 0 running the trainable. :func:`ray_clip_batches` detects that it runs in a
placement group with a data bundle and schedules all of the dataset's tasks in that bundle (via the
process's ``DataContext``, which only the trial's process sees), capping Data's CPU budget at
``data_cpu``. Data therefore never competes with other trials. A trial without a data bundle gets a
warning (it may hang on a full cluster); use :func:`vidgan.data.arrow_clip_batches` there.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from vidgan.data import COLUMNS, PREFETCH, batches_from_chunks, epoch_seed
from vidgan.shards import ShardSet, table_to_clips, verified

if TYPE_CHECKING:
    import torch


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
            "tune_jobs.resources.trial_resources(...) or use vidgan.data.arrow_clip_batches.",
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
    # Datasource V1 everywhere: V2 lists Parquet footers with actors pinned to SPREAD scheduling, outside any
    # placement group (in a full cluster they never start: seen here), and streamed 2-4x fewer clips/s here
    # (64x64x32, 1 data CPU; V1 schedules every task with the strategy below).
    ctx.use_datasource_v2 = False
    if placement is None:
        return 1.0
    strategy, cpus = placement
    with warnings.catch_warnings():
        # Deprecated (removal announced for 2027) but the only switch that reaches every task and actor
        # a dataset starts; pinned Ray 2.60 honours it (verified in map_operator / parquet_datasource).
        warnings.simplefilter("ignore")
        ctx.scheduling_strategy = strategy
        ctx.scheduling_strategy_large_args = strategy
    ctx.execution_options.resource_limits = ray.data.ExecutionResources(cpu=cpus)
    return min(1.0, cpus)


#: an execution of the dataset streams this many clips (whole epochs), to amortise its start-up, unless that
#: lists more than MAX_FILES_PER_EXECUTION shard files (tiny datasets)
CLIPS_PER_EXECUTION = 1 << 17
MAX_FILES_PER_EXECUTION = 256
#: the next execution is opened when this many clips of the current one are left to arrive: by then its read
#: tasks are done (opened earlier, the next one's tasks took the CPUs of a 1-CPU data bundle: 5 s stalls)
OPEN_AHEAD_CLIPS = 1024


#: Ray Data looks up the sizes of the paths it is given in the reading process while they are fewer than this
#: (``FILE_SIZE_FETCH_PARALLELIZATION_THRESHOLD``) or all sit in one folder that is not itself one of them; past it,
#: one file named many times (a one-shard dataset read for several epochs) sends the look-ups to Ray tasks that are
#: placed outside the trial's placement group, which wait forever for CPUs the trials hold (seen with s3://)
RAY_SERIAL_METADATA_PATHS = 16


def epochs_per_execution(clips: int, files: int) -> int:
    """Whole epochs of a dataset of ``clips`` clips in ``files`` shards in one execution: enough to amortise an
    execution's start, and for a one-shard dataset fewer than :data:`RAY_SERIAL_METADATA_PATHS` (see there)."""
    most = MAX_FILES_PER_EXECUTION // max(files, 1) if files > 1 else RAY_SERIAL_METADATA_PATHS - 1
    return max(1, min(-(-CLIPS_PER_EXECUTION // max(clips, 1)), most))


def execution_files(files: list[str], clips: int, execution: int, shuffle: bool, seed: int | None) -> list[str]:
    """The shard files one execution reads, in order: whole epochs, each a shuffle seeded by its epoch."""
    per = epochs_per_execution(clips, len(files))
    out: list[str] = []
    for epoch in range(execution * per, (execution + 1) * per):
        order = np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(files)) if shuffle else range(len(files))
        out += [files[i] for i in order]
    return out


def _ray_chunks(shard_set: ShardSet, shuffle: bool, seed: int | None, prefetch_epochs: bool) -> Iterator[np.ndarray]:
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    fs, files = shard_set.fs, shard_set.files
    num_cpus = _configure_context(data_placement())
    expected = epochs_per_execution(shard_set.clips, len(files)) * shard_set.clips

    def open_execution(execution: int) -> tuple[Any, Iterator[Any]]:
        # our own file order: Ray's FileShuffleConfig shuffles once per execution, not once per epoch
        paths = execution_files(files, shard_set.clips, execution, shuffle, seed)
        ds = ray.data.read_parquet(paths, filesystem=fs, columns=COLUMNS, num_cpus=num_cpus)
        it = iter(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2))
        return next(it, None), it

    before = {t.ident for t in threading.enumerate()}
    pool = ThreadPoolExecutor(1, thread_name_prefix="vidgan-next-epoch")
    opener: Callable[[int], Any] = (
        (lambda e: pool.submit(open_execution, e)) if prefetch_epochs else open_execution
    )
    it: Iterator[Any] | None = None
    pending: Any = None
    try:
        pending = opener(0)
        execution = 0
        while True:
            first, it = pending.result() if prefetch_epochs else pending
            execution += 1
            pending = None
            if first is None:
                raise ValueError(f"shard directory {shard_set.uri!r} holds no clips")
            got = 0
            for block in itertools.chain([first], it):
                if not block.num_rows:
                    continue
                got += block.num_rows
                if prefetch_epochs and pending is None and got >= expected - OPEN_AHEAD_CLIPS:
                    pending = opener(execution)
                yield table_to_clips(block)
            if pending is None:
                pending = opener(execution)
    finally:
        # wait for an execution being opened: a thread still inside Ray after ray.shutdown() aborts the process
        pool.shutdown(wait=True, cancel_futures=True)
        # and stop the executors of the open executions (their threads would touch Ray after ray.shutdown())
        if prefetch_epochs and pending is not None:  # done now: cancelled, failed or opened
            pending = None if pending.cancelled() or pending.exception() else pending.result()
        _close(it)
        _close(pending and pending[1])
        # Ray Data's iterator threads notice the close within ~0.1 s; one still inside Ray when the caller
        # runs ray.shutdown() ends the process ("core worker has already been shutdown", exit 1: seen here)
        deadline = time.monotonic() + 2.0
        for t in threading.enumerate():
            if t.ident not in before and t.name == RAY_DATA_ITER_THREAD:
                t.join(max(0.0, deadline - time.monotonic()))


#: the name of Ray Data's batch-iterator worker threads (ray.data._internal.block_batching.util.iter_threaded)
RAY_DATA_ITER_THREAD = "iter_threaded"


def _close(it: Any) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


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
    prefetch: int = PREFETCH,
    pin_memory: bool | None = None,
) -> Iterator[torch.Tensor]:
    """Endless ``[B, 3, T, H, W]`` batches streamed with Ray Data (``read_parquet`` + file shuffle).

    Starts a local Ray (or joins ``RAY_ADDRESS``) when none is initialised. Inside a Tune trial
    requested with ``tune_jobs.resources.trial_resources``, all of the dataset's tasks run in the trial's data bundle.
    """
    shard_set = verified(uri)
    chunks = _ray_chunks(shard_set, shuffle, seed, prefetch_epochs)
    return batches_from_chunks(shard_set, chunks, batch_size, shuffle, flip, seed, as_float, shuffle_buffer,
                               pin_memory=pin_memory, prefetch=prefetch)
