"""The plan of a sweep, from its spec alone: what ``vidgan sweep SPEC --check`` prints and the first lines
of every sweep (the demo's included).

:func:`check` validates the spec, its datasets and the MLflow target without starting Ray or a trial
(a missing sample dataset is reported, not built; a SQLite MLflow store that does not exist yet is not
created) and returns the validated spec with the plan's lines. It raises :class:`~tune_jobs.spec.SpecError`
or :class:`~tune_jobs.tracking.TrackingUnavailable` with the reason.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tune_jobs.spec import SpecError, SweepSpec, load_spec
from vidgan.files import redact_uri


def asha_rungs(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """Iterations at which ASHA (one bracket, as Ray computes it) compares trials."""
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return [int(grace_period * reduction_factor**k) for k in range(count)]


@dataclass(frozen=True)
class WorstCase:
    """A sweep's work when no trial is stopped early (every trial runs to ``max_t``), from its spec alone."""

    trials: int
    iterations_per_trial: int  # scheduler.max_t
    evaluations_per_trial: int  # every eval.every iterations, and at max_t
    concurrency: int  # trials at a time

    @property
    def iterations(self) -> int:
        return self.trials * self.iterations_per_trial

    @property
    def evaluations(self) -> int:
        return self.trials * self.evaluations_per_trial

    @property
    def rounds(self) -> int:
        """Trials one after another on each of the ``concurrency`` slots (the longest slot's count)."""
        return math.ceil(self.trials / self.concurrency)

    def trial_s(self, iteration_s: float, evaluation_s: float) -> float:
        return self.iterations_per_trial * iteration_s + self.evaluations_per_trial * evaluation_s

    def wall_s(self, iteration_s: float, evaluation_s: float, fixed_s: float = 0.0) -> float:
        """Wall time: ``fixed_s`` plus ``rounds`` whole trials one after another (worst-case trials are equally
        long, so the busiest slot runs ``rounds`` of them)."""
        return fixed_s + self.rounds * self.trial_s(iteration_s, evaluation_s)


def evaluations_per_trial(max_t: int, every: int) -> int:
    """A trial evaluates (and reports to the scheduler) at every multiple of ``every`` up to ``max_t`` and at
    ``max_t`` itself (tune_jobs.trainable.train_trial)."""
    return max_t // every + (1 if max_t % every else 0)


def worst_case(spec: SweepSpec, cpus: int | None = None) -> WorstCase:
    """Every trial to ``max_t`` (what ASHA may decide; FIFO and PBT always do), ``max_concurrent_trials`` at a
    time, else as many as ``cpus`` (this machine's) fit at ``resources.cpu`` + ``data_cpu`` each."""
    n, _ = trial_count(spec)
    if spec.max_concurrent_trials:
        slots = spec.max_concurrent_trials
    else:
        per_trial = spec.resources.cpu + spec.resources.data_cpu
        slots = max(1, int((cpus or os.cpu_count() or 1) // per_trial)) if per_trial else n
    return WorstCase(n, spec.scheduler.max_t, evaluations_per_trial(spec.scheduler.max_t, spec.eval.every),
                     max(1, min(slots, n)))


# What a local sweep costs beyond the pieces timed here, measured on the 2-core machine (two 2-trial demo sweeps,
# max_t 60, every 20, at 03:00 UTC on 2026-12-07, load ~2): in the sweep the trials trained as fast as alone (sn
# 0.19-0.21 s, gp 0.28 s per iteration; timed alone 0.20 and 0.29), an evaluation took 20 s of I3D passes (timed
# here: 2 x 16 x 0.58 s) and ~0.5 s of samples, checkpoint and MLflow records, a trial's start ~3 s;
# once per sweep: Python and Ray's start, the MLflow store, the dataset's checks, the final table: 26 s with the
# data made and its real statistics cached, 48 s + the real statistics (33 s) on the first run (the 2048 squares
# made, ~5 s). Ray's workers run at nice 15: other users' processes on the machine slow the trials more than
# they slow the timing here.
SWEEP_ITERATION_FACTOR = 1.0
EVALUATION_EXTRA_S = 1.5  # the records' 0.5 s + a trial's start spread over its evaluations
SWEEP_FIXED_S = 45.0


@dataclass(frozen=True)
class Costs:
    """Seconds measured on this machine: one training iteration (mean over the variants), one evaluation (the
    I3D passes, from a timed pass over 2 clips), the real statistics when not cached yet."""

    iteration_s: float
    evaluation_s: float
    real_s: float
    device: str


def _iteration_s(spec: SweepSpec, variant: str, device: str) -> float:
    """One training iteration of ``variant`` at the spec's batch, after a warm-up (random uint8 clips)."""
    import time

    import torch

    from vidgan.trainer import Trainer

    trial = spec.trial({"variant": variant, "dataset": spec.datasets[0].name, "seed": spec.seeds[0]})
    trainer = Trainer(spec.model, trial.variant, trial.train_config, device=device)
    m, b = spec.model, trial.train_config.batch_size
    clip = torch.randint(0, 256, (b, m.frames, m.size, m.size, 3), dtype=torch.uint8).permute(0, 4, 1, 2, 3)
    batches = iter(lambda: clip, None)
    for _ in range(2):  # warm-up: first-call allocations, oneDNN's kernels (the first variant's first one ~1 s)
        trainer.train_iteration(batches)
    t0 = time.perf_counter()
    trainer.train_iteration(batches)
    trainer.train_iteration(batches)
    return (time.perf_counter() - t0) / 2


def measure_costs(spec: SweepSpec, device: str = "cpu") -> Costs:
    """Time the spec's pieces on this machine at the trials' thread count (~5 s on 2 cores): two training
    iterations of each variant (at most three) after two warm-up ones, and an I3D pass over 2 clips of
    ``eval.frames`` frames after a 1-clip warm-up, scaled to the evaluation's passes (n_fake clips, twice with
    EMA: the scored generator and the other one) and to the real statistics (n_real clips per dataset)."""
    import time

    import torch

    from vidgan.fvd.features import extract_features, load_i3d

    threads = spec.resources.threads or max(1, int(spec.resources.cpu))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        variants = spec.variants[:3]
        iteration = sum(_iteration_s(spec, v, device) for v in variants) / len(variants)
        ev = spec.eval
        model = load_i3d(device)
        clip = torch.rand(2, 3, ev.frames, spec.model.size, spec.model.size, device=device) * 2 - 1
        extract_features(model, iter([clip[:1]]), 1)
        t0 = time.perf_counter()
        extract_features(model, iter([clip]), 2)
        per_clip = (time.perf_counter() - t0) / 2
    finally:
        torch.set_num_threads(before)
    passes = 2 if spec.train.ema else 1
    return Costs(iteration, passes * ev.n_fake * per_clip, ev.n_real * per_clip * len(spec.datasets), device)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def estimate_line(spec: SweepSpec, costs: Costs, cached_real: bool = False) -> str:
    """The worst case's wall time on this machine (an estimate) and what it assumes."""
    wc = worst_case(spec)
    iteration_s = costs.iteration_s * SWEEP_ITERATION_FACTOR
    evaluation_s = costs.evaluation_s + EVALUATION_EXTRA_S
    fixed = SWEEP_FIXED_S + (0.0 if cached_real else costs.real_s)
    total = wc.wall_s(iteration_s, evaluation_s, fixed)
    return (
        f"wall time, worst case (every trial to {wc.iterations_per_trial} iterations): about {_minutes(total)} on "
        f"this machine ({costs.device}), an estimate: {wc.trials} trial(s) x ({wc.iterations_per_trial} iterations "
        f"x {iteration_s:.2f} s + {wc.evaluations_per_trial} evaluations x {evaluation_s:.0f} s), "
        f"{wc.concurrency} at a time, + {fixed:.0f} s once (Ray, real statistics{' cached' if cached_real else ''}); "
        f"costs timed here just now: it assumes the machine stays as loaded as it was (other users' processes slow "
        f"Ray's trials, at nice 15, more); early stopping only shortens it"
    )


def trial_count(spec: SweepSpec) -> tuple[int, str]:
    """(trials, how they come about)."""
    if spec.scheduler.type == "pbt":
        return spec.scheduler.population, f"a PBT population of {spec.variants[0]} on {spec.datasets[0].name}"
    if spec.search is not None:
        return spec.search.num_samples, f"Optuna TPE over {', '.join(spec.search.space)}, variants in turn"
    v, d, s = len(spec.variants), len(spec.datasets), len(spec.seeds)
    return v * d * s, f"{v} variant(s) x {d} dataset(s) x {s} seed(s)"


def _scheduler_line(spec: SweepSpec) -> str:
    s, ev = spec.scheduler, spec.eval
    how = {"mean_last": f"the mean of the last {ev.smoothing.k} evaluations' ", "best_so_far": "the best so far of ",
           "none": "the latest "}[ev.smoothing.rule]
    metric = f"{ev.scheduler_metric} = {how}{ev.metric} of the {'EMA' if ev.generator == 'ema' else 'raw'} generator"
    if s.type == "asha":
        rungs = asha_rungs(s.max_t, s.grace_period, s.reduction_factor)
        return (
            f"scheduler: ASHA on {metric} (lower is better), rungs at iterations {', '.join(map(str, rungs))} "
            f"(grace {s.grace_period}, reduction {s.reduction_factor:g}), at most {s.max_t} iterations"
        )
    if s.type == "pbt":
        return (
            f"scheduler: PBT on {metric}, every {s.perturbation_interval} iterations the bottom "
            f"{s.quantile_fraction:.0%} copy the top {s.quantile_fraction:.0%} and perturb "
            f"{', '.join(s.mutations)}{' (synchronous)' if s.synch else ''}; {s.max_t} iterations each"
        )
    return f"scheduler: FIFO, every trial runs {s.max_t} iterations"


def _gpu_line(spec: SweepSpec, address: str | None) -> str:
    from tune_jobs import runtime

    r = spec.resources
    data = f" + {r.data_cpu:g} CPU for its Ray Data tasks" if r.data_cpu else " (pyarrow reader in the trial)"
    head = f"resources per trial: {r.cpu:g} CPU{data}; "
    if r.gpu == "auto" and address is not None:
        gpu = "GPU: auto, decided by the GPUs the cluster's Ray sees when the sweep starts"
    elif r.gpu == "auto":
        seen = runtime.local_gpus()
        gpu = runtime.describe_gpu(runtime.gpu_per_trial(seen, spec.max_concurrent_trials), seen, True)
    elif r.gpu == 0:
        gpu = "CPU trials"
    else:
        gpu = f"{r.gpu:g} GPU per trial"
    limit = f"; at most {spec.max_concurrent_trials} at a time" if spec.max_concurrent_trials else ""
    return head + gpu + limit


def _dataset_lines(spec: SweepSpec, clips: dict[str, int]) -> list[str]:
    lines = []
    m = spec.model
    for ds in spec.datasets:
        if clips[ds.name]:
            lines.append(f"data {ds.name}: {clips[ds.name]} clips of {m.frames}x{m.size}x{m.size} at "
                         f"{redact_uri(ds.path)}")
        else:
            made = (f"{ds.synthetic.clips} synthetic {ds.synthetic.kind} clips" if ds.synthetic
                    else "the sample videos")
            lines.append(f"data {ds.name}: built from {made} at {redact_uri(ds.path)} when the sweep starts")
    return lines


def _model_line(spec: SweepSpec, address: str | None) -> str:
    """The model's size and the memory a trial needs to train it (:mod:`vidgan.budget`); SpecError when it cannot
    fit one trial's device. Checked here for a local sweep (a cluster's nodes are not known before it starts)."""
    from vidgan import budget

    m, batch, ev = spec.model, spec.train.batch_size, spec.eval
    fp = budget.footprint(m)
    need = fp.training_bytes(batch)
    eval_batch = min(ev.batch_size, ev.n_fake)  # clips generated and scored at once (vidgan.fvd.evaluator)
    evaluation = budget.evaluation_bytes(m, eval_batch, ev.frames, held=fp.state_bytes())["total"]
    if address is None:
        import torch

        gpu = spec.resources.gpu
        device = "cuda" if gpu != 0 and torch.cuda.is_available() else "cpu"
        try:
            budget.check_fits(m, batch, device, "training", f"sweep {spec.name}: model")
            budget.check_evaluation(m, eval_batch, ev.frames, device, f"sweep {spec.name}: the trials' FVD evaluation",
                                    held=fp.state_bytes(), advice="lower eval.batch_size")
        except budget.ModelTooLarge as exc:
            raise SpecError(str(exc)) from None
    return (f"model: {budget.describe(fp)}, about {need / budget.GIB:.2f} GiB per trial to train at batch {batch}, "
            f"{evaluation / budget.GIB:.2f} GiB to evaluate at eval batch {eval_batch} (estimates)")


def _tracking(spec: SweepSpec) -> str:
    """The MLflow URI, checked; a SQLite store that does not exist yet only needs a writable folder."""
    from tune_jobs import tracking

    uri = tracking.resolve_tracking_uri(spec.mlflow.tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise tracking.TrackingUnavailable(f"MLflow store {uri}: folder {folder} does not exist or is not writable")
        return uri
    tracking.check_tracking(uri)
    return uri


def _real_cached(spec: SweepSpec, clips: dict[str, int]) -> bool:
    """Whether every dataset's real I3D statistics are cached already (vidgan.fvd.stats)."""
    from pyarrow.fs import FileType

    from vidgan import shards
    from vidgan.fvd.stats import stats_location

    def cached(path: str) -> bool:
        shard_set = shards.describe(path)
        where = stats_location(shard_set, spec.eval.n_real, spec.eval.frames)
        return shard_set.fs.get_file_info(where).type != FileType.NotFound

    try:
        return all(clips[ds.name] and cached(ds.path) for ds in spec.datasets)
    except (OSError, ValueError):
        return False


def _estimate(spec: SweepSpec, clips: dict[str, int]) -> str:
    """The worst case's wall time from costs timed here (local sweeps; a few seconds)."""
    import torch

    device = "cuda" if spec.resources.gpu != 0 and torch.cuda.is_available() else "cpu"
    return estimate_line(spec, measure_costs(spec, device), cached_real=_real_cached(spec, clips))


def check(
    spec_or_path: SweepSpec | str | os.PathLike, address: str | None = None, estimate: bool = True
) -> tuple[SweepSpec, list[str]]:
    """Validate everything a sweep needs short of starting Ray (an ``address`` must answer); return the spec
    and the plan's lines, with the worst case's estimated wall time on this machine when ``estimate`` (a local
    sweep: its pieces are timed here, a few seconds)."""
    from tune_jobs import explore
    from tune_jobs.sweep import check_storage, prepare_datasets

    spec = spec_or_path if isinstance(spec_or_path, SweepSpec) else load_spec(spec_or_path)
    if spec.search is not None and (len(spec.datasets) != 1 or len(spec.seeds) != 1):
        raise SpecError("a search sweep takes one dataset and one seed")
    storage_path = spec.storage_path or str(Path("results").resolve())
    check_storage(storage_path)
    model = _model_line(spec, address)  # a model that cannot fit is refused before the data are read
    uri = _tracking(spec)
    clips = prepare_datasets(spec, build_samples=False)
    if address is not None:
        from tune_jobs.runtime import ClusterMismatch, check_reachable

        try:
            check_reachable(address)
        except ClusterMismatch as exc:
            raise SpecError(str(exc)) from None
    n, how = trial_count(spec)
    ev = spec.eval
    lines = [
        f"sweep {spec.name}: {n} trial(s), {how}",
        *_dataset_lines(spec, clips),
        _gpu_line(spec, address),
        _scheduler_line(spec),
        f"evaluation: every {ev.every} iterations, {ev.metric.upper()} of {ev.n_fake} generated vs {ev.n_real} real "
        f"clips of {ev.frames} frames (compare only at equal N)",
    ]
    if spec.search is not None:
        storage = explore.optuna_storage(spec, uri)
        points = len(explore.points_to_evaluate(spec))
        lines.append(
            f"Optuna: study {spec.search.study_name or '<sweep name>'} in {storage or 'memory'}"
            + (f", {points} trial(s) from points_to_evaluate first" if points else "")
        )
    lines.append(model)
    if estimate:
        lines.append(_estimate(spec, clips) if address is None else
                     "wall time: not estimated for a cluster (its nodes are not known before the sweep starts)")
    lines.append(f"MLflow: {uri}, experiment {spec.mlflow.experiment}")
    lines.append(f"Tune results and checkpoints: {storage_path}")
    py = ".".join(map(str, sys.version_info[:3]))
    where = "every node's Python minor is checked against it at start" if address else "local Ray"
    lines.append(f"Python {py} on this driver ({where})")
    return spec, lines
