"""Streaming clip batches with Ray Data (``read_parquet`` + file shuffle), for Tune trials and clusters.

Same batches as :func:`vidgan.data.arrow_clip_batches` (same shuffle buffer, flip and tensors)::

    batches = ray_clip_batches("s3://bucket/ucf101-64", 64, flip=True, seed=0)

Epoch boundaries: every epoch is a new execution of the dataset, which took seconds to start here. When
epoch ``e`` starts, epoch ``e + 1`` is opened in a background thread (its first block is read), so the next
epoch is already streaming when this one ends; ``benchmarks/data_stream.py`` reports the largest gap.

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

import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from vidgan.data import COLUMNS, batches_from_chunks, epoch_seed
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


def _ray_chunks(shard_set: ShardSet, shuffle: bool, seed: int | None, prefetch_epochs: bool) -> Iterator[np.ndarray]:
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)
    fs, files = shard_set.fs, shard_set.files
    num_cpus = _configure_context(data_placement())

    def open_epoch(epoch: int) -> tuple[Any, Iterator[Any]]:
        shuffle_cfg = ray.data.FileShuffleConfig(seed=epoch_seed(seed, epoch)) if shuffle else None
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
                raise ValueError(f"shard directory {shard_set.uri!r} holds no clips")
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
) -> Iterator[torch.Tensor]:
    """Endless ``[B, 3, T, H, W]`` batches streamed with Ray Data (``read_parquet`` + file shuffle).

    Starts a local Ray (or joins ``RAY_ADDRESS``) when none is initialised. Inside a Tune trial
    requested with ``tune_jobs.resources.trial_resources``, all of the dataset's tasks run in the trial's data bundle.
    """
    shard_set = verified(uri)
    chunks = _ray_chunks(shard_set, shuffle, seed, prefetch_epochs)
    return batches_from_chunks(shard_set, chunks, batch_size, shuffle, flip, seed, as_float, shuffle_buffer)
