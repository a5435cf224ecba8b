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
from pathlib import Path

from tune_jobs.spec import SpecError, SweepSpec, load_spec
from vidgan.files import redact_uri


def asha_rungs(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """Iterations at which ASHA (one bracket, as Ray computes it) compares trials."""
    count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return [int(grace_period * reduction_factor**k) for k in range(count)]


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


def check(spec_or_path: SweepSpec | str | os.PathLike, address: str | None = None) -> tuple[SweepSpec, list[str]]:
    """Validate everything a sweep needs short of starting Ray (an ``address`` must answer); return the spec
    and the plan's lines."""
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
    lines.append(f"MLflow: {uri}, experiment {spec.mlflow.experiment}")
    lines.append(f"Tune results and checkpoints: {storage_path}")
    py = ".".join(map(str, sys.version_info[:3]))
    where = "every node's Python minor is checked against it at start" if address else "local Ray"
    lines.append(f"Python {py} on this driver ({where})")
    return spec, lines
