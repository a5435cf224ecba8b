"""Run a sweep: validate, prepare data and real statistics, run Ray Tune, report.

``run_sweep`` is what ``vidgan sweep SPEC`` (and a Ray job's entrypoint) calls::

    spec -> checks (datasets, MLflow) -> ray.init -> real statistics (once, as a Ray task)
         -> MLflow parent run -> Tuner(ASHA [+ OptunaSearch]) -> comparison table -> MLflow

Nothing is launched until every check has passed. An interrupted sweep resumes with ``--resume``
(``Tuner.restore``); its MLflow parent run id is kept in the experiment folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tune_jobs import explore, report, runtime, tracking
from tune_jobs.overrides import TAG_OVERRIDES
from tune_jobs.pinning import pin_to_start, resolved_settings
from tune_jobs.resources import trial_resources
from tune_jobs.restarts import read_restarts, restart_line, restart_sentence, restart_tags
from tune_jobs.spec import SpecError, SweepSpec, load_spec
from tune_jobs.tracking import SweepContext
from tune_jobs.trainable import CHECKPOINT_FILE, train_trial
from vidgan import shards
from vidgan import storage as vidgan_storage
from vidgan.errors import one_line
from vidgan.files import atomic_write_fs, join_uri, redact_uri, resolve_fs

log = logging.getLogger(__name__)

#: the sweep's own state (its MLflow parent run) in the Tune experiment folder, for --resume
SWEEP_STATE_FILE = "vidgan_sweep.json"


@dataclass
class SweepOutcome:
    name: str
    path: str
    parent_run_id: str
    tracking_uri: str
    rows: list[report.TrialRow]
    table: str  # the comparison over seeds, then the trials
    iterations_saved: float
    variants: list[report.VariantRow] = field(default_factory=list)
    restarts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # trial id -> tune_jobs.restarts

    def restart_line(self) -> str:
        """The summary's count of restarts by cause ('' when there was none)."""
        return restart_line([r["cause"] for rs in self.restarts.values() for r in rs])


# ------------------------------------------------------------------------------------------ checks
def prepare_datasets(spec: SweepSpec, build_samples: bool = True) -> dict[str, int]:
    """Make the sample dataset where asked, then check every dataset fits the model and the evaluation.

    Returns the clips of each dataset. With ``build_samples=False`` (``--check``) a missing sample dataset
    is not built: it counts 0 clips and is left for the sweep to make.
    """
    clips: dict[str, int] = {}
    for ds in spec.datasets:
        try:
            shard_set = shards.verified(ds.path)  # every shard's size and sha256, before any trial reads it
        except FileNotFoundError:
            if not (ds.sample or ds.synthetic):
                raise SpecError(
                    f"dataset {ds.name!r}: no shard directory at {ds.path} (run `vidgan ingest ... --out {ds.path}`)"
                ) from None
            if not build_samples:
                clips[ds.name] = 0
                continue
            from vidgan.ingest import IngestConfig, IngestError, ingest, ingest_sample

            try:
                if ds.synthetic:
                    log.info("making %d synthetic %s clips in %s ...", ds.synthetic.clips, ds.synthetic.kind, ds.path)
                    cfg = IngestConfig(frames=spec.model.frames, size=spec.model.size, synthetic=ds.synthetic,
                                       parallel="local")
                    ingest([], ds.path, cfg)
                else:
                    log.info("ingesting the sample videos into %s ...", ds.path)
                    ingest_sample(ds.path, frames=spec.model.frames, size=spec.model.size, stride=ds.sample_stride)
            except (IngestError, OSError) as exc:  # no sample videos installed, an unwritable path, ...
                raise SpecError(f"dataset {ds.name!r}: {exc}") from None
            shard_set = shards.verified(ds.path)  # hashed here once, not in every trial
        except shards.ManifestError as exc:
            raise SpecError(f"dataset {ds.name!r}: {exc}") from None
        total, frames, size = shard_set.clips, shard_set.frames, shard_set.height
        if (frames, size, shard_set.width) != (spec.model.frames, spec.model.size, spec.model.size):
            raise SpecError(
                f"dataset {ds.name!r} holds {frames}-frame {size}x{size} clips but the model makes "
                f"{spec.model.frames}-frame {spec.model.size}x{spec.model.size}; ingest with matching --frames/--size"
            )
        if total < spec.eval.n_real:
            raise SpecError(
                f"dataset {ds.name!r} holds {total} clips, fewer than eval.n_real={spec.eval.n_real}: "
                "no real statistics possible"
            )
        if total < spec.train.batch_size:
            raise SpecError(f"dataset {ds.name!r} holds {total} clips, fewer than one batch of {spec.train.batch_size}")
        clips[ds.name] = total
    return clips


def prepare_real_statistics(spec: SweepSpec) -> None:
    """Compute (or find cached) real I3D features for every dataset once, before any trial starts.

    Runs as a Ray task with the trials' accelerator, so on a cluster it lands on a GPU node.
    """
    import ray

    from vidgan.fvd import real_features
    from vidgan.progress import progress, run_reporting

    ev = spec.eval
    gpu = 1 if spec.resources.gpu > 0 else 0

    stamps = shards.verified_stamps()  # the shards the driver hashed are not hashed again on the task's node

    def compute(path: str) -> Any:
        """A streaming task: yields clip counts as the I3D pass goes, the features' shape last."""
        import torch

        shards.trust(stamps)

        # a node whose GPUs are only logical (the local rehearsal) falls back to the CPU
        device = "cuda" if gpu and torch.cuda.is_available() else "cpu"
        yield from run_reporting(
            lambda report: real_features(
                path, ev.n_real, ev.frames, device=device, batch_size=ev.batch_size, on_clips=report
            ).shape
        )

    task = ray.remote(num_cpus=1, num_gpus=gpu, num_returns="streaming")(compute)
    log.info("real statistics: %d clips x %d frames per dataset (cached after the first time) ...", ev.n_real,
             ev.frames)
    for position, ds in enumerate(spec.datasets):  # one after another: each bar is one dataset's pass
        with progress(total=ev.n_real, desc=f"real I3D features {ds.name}", unit="clip", position=position) as bar:
            for ref in task.remote(ds.path):
                value = ray.get(ref)
                if isinstance(value, int):
                    bar.update(value)
                elif bar.n == 0:
                    bar.set_postfix_str("cached")


# ------------------------------------------------------------------------------------------ tune
def define_by_run(
    trial: Any,
    variants: list[str],
    space: dict[str, dict[str, Any]],
    penalties: dict[str, bool],
    drifts: dict[str, bool],
    constants: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Optuna define-by-run space. Variants take turns (equal budget for each); every hyperparameter is
    named per variant (``gp.lr``) so TPE models each variant separately, and a penalty weight or drift
    weight exists only for variants that have one."""
    variant = variants[trial.number % len(variants)]
    chosen: dict[str, Any] = {**(constants or {}), "variant": variant}
    for key, r in space.items():
        if key == "penalty_weight" and not penalties[variant]:
            continue
        if key == "drift_weight" and not drifts[variant]:
            continue
        name = f"{variant}.{key}"
        if r.get("choices") is not None:
            value = trial.suggest_categorical(name, r["choices"])
        elif key == "n_critic":
            value = trial.suggest_int(name, int(r["low"]), int(r["high"]), log=r["log"])
        else:
            value = trial.suggest_float(name, r["low"], r["high"], log=r["log"])
        chosen[key] = int(value) if key == "n_critic" else value
    return chosen


def _tune_setup(
    spec: SweepSpec, name: str = "vidgan", tracking_uri: str = "sqlite:///mlflow.db"
) -> tuple[dict[str, Any] | None, Any, int]:
    """(param_space, search_alg, num_samples)."""
    from ray import tune

    if spec.scheduler.type == "pbt":
        return explore.pbt_param_space(spec), None, spec.scheduler.population
    if spec.search is None:
        space = {
            "variant": tune.grid_search(spec.variants),
            "dataset": tune.grid_search([d.name for d in spec.datasets]),
            "seed": tune.grid_search(spec.seeds),
        }
        return space, None, 1
    if len(spec.datasets) != 1 or len(spec.seeds) != 1:
        raise SpecError("a search sweep takes one dataset and one seed")
    fn = functools.partial(
        define_by_run,
        variants=list(spec.variants),
        space={k: v.model_dump() for k, v in spec.search.space.items()},
        penalties={v: spec.variant(v).has_penalty for v in spec.variants},
        drifts={v: spec.variant(v).has_drift for v in spec.variants},
        constants={"dataset": spec.datasets[0].name, "seed": spec.seeds[0]},
    )
    storage = explore.optuna_storage(spec, tracking_uri)
    log.info("Optuna study %s in %s", spec.search.study_name or name, storage or "memory")
    searcher = explore.optuna_searcher(spec, fn, name, storage)
    return None, searcher, spec.search.num_samples


def _scheduler(spec: SweepSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    s = spec.scheduler
    if s.type == "fifo":
        return FIFOScheduler()
    if s.type == "pbt":
        return explore.pbt_scheduler(spec)
    return ASHAScheduler(
        time_attr="iteration", max_t=s.max_t, grace_period=s.grace_period, reduction_factor=s.reduction_factor
    )


def _storage(spec: SweepSpec) -> str:
    return spec.storage_path or str(Path("results").resolve())


def tune_storage(uri: str) -> tuple[str, Any]:
    """(``storage_path``, ``storage_filesystem``) for Tune. A URI with pyarrow's query string
    (``s3://b/p?endpoint_override=...``) goes as its filesystem and path: Tune appends the sweep's name to the
    path, which after a query would land inside it (``scheme=http/<name>``)."""
    if vidgan_storage.is_remote(uri) and "?" in uri:
        fs, path = resolve_fs(uri)
        return path, fs
    return uri, None


def check_storage(storage: str) -> None:
    """Refuse (SpecError) a ``storage_path`` the sweep cannot write, before any MLflow run opens. Local: a file, a
    path under a file, or under a folder this user cannot write (nothing is created). Object stores: a scheme vidgan
    does not write, a bucket that does not exist or a write this user is denied (a probe object is written and
    removed, :func:`vidgan.storage.probe_writable`)."""
    if vidgan_storage.is_remote(storage):
        try:
            vidgan_storage.probe_writable(storage, "storage_path")
        except vidgan_storage.StorageError as exc:
            raise SpecError(str(exc)) from None
        return
    path = Path(storage.removeprefix("file://")).expanduser().absolute()
    where = f"storage_path {storage}"
    if path.exists() and not path.is_dir():
        raise SpecError(f"{where} is a file, not a folder: name a folder for Tune's results and checkpoints")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SpecError(f"{where} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "is" if existing == path else "cannot be created:"
        raise SpecError(f"{where} {verb} not writable ({existing} is not writable by this user)")


@contextlib.contextmanager
def parent_failed_on_error(uri: str, parent_run_id: str) -> Iterator[None]:
    """Mark the sweep's MLflow parent run FAILED with the reason (KILLED for Ctrl-C) when the ``with`` body
    raises, e.g. a sweep that fails to start after its parent run was opened; the exception goes on."""
    try:
        yield
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        reason = "interrupted (Ctrl-C)" if interrupted else f"{type(exc).__name__}: {one_line(exc)}"
        try:
            parent = tracking.Tracker(uri, parent_run_id)
            parent.set_tags({tracking.TAG_END: "interrupted" if interrupted else "failed", tracking.TAG_REASON: reason})
            parent.describe(f"Sweep {'interrupted' if interrupted else 'failed'}: {reason}"
                            + ("\n\n`vidgan sweep SPEC --resume` continues it." if interrupted else ""))
            parent.finish("KILLED" if interrupted else "FAILED")
        except Exception as mark:  # noqa: BLE001 - the original error is the one to report
            log.warning("could not mark the MLflow parent run %s %s: %s", parent_run_id,
                        "KILLED" if interrupted else "FAILED", one_line(mark))
        raise


def _write_state(path: str, state: dict[str, Any]) -> None:
    fs, p = resolve_fs(path)
    fs.create_dir(p, recursive=True)
    atomic_write_fs(fs, join_uri(p, SWEEP_STATE_FILE), json.dumps(state, indent=1).encode())


def _read_state(path: str) -> dict[str, Any] | None:
    fs, p = resolve_fs(path)
    try:
        with fs.open_input_stream(join_uri(p, SWEEP_STATE_FILE)) as f:
            return json.loads(f.read().decode())
    except (FileNotFoundError, OSError):
        return None


def _pin_resumed(spec: SweepSpec, state: dict[str, Any]) -> SweepSpec:
    """The spec a resumed sweep runs: its trials keep the settings the sweep started with (tune_jobs.pinning)."""
    if "settings" not in state:
        log.warning("--resume: this sweep was started by a vidgan that did not record its settings; what its spec "
                    "leaves out takes this version's defaults")
        return spec
    spec, changed = pin_to_start(spec, state["settings"])
    for line in changed:
        log.warning("--resume keeps the setting the sweep started with: %s", line)
    return spec


def _latest_sweep(storage: str, prefix: str) -> str | None:
    import pyarrow.fs as pafs

    fs, p = resolve_fs(storage)
    try:
        infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=True))
    except OSError:
        return None
    names = sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and i.base_name.startswith(prefix))
    return names[-1] if names else None


def spec_params(spec: SweepSpec) -> dict[str, Any]:
    """The spec as logged to the parent run's MLflow params: credentials in URIs (the tracking URI, s3:// paths
    with ``key:secret@``) removed."""
    return tracking.redact_uris(spec.model_dump(mode="json"))


def sweep_params(spec: SweepSpec) -> dict[str, Any]:
    """The few flat parameters of the parent run (the whole spec is its artifact ``spec.yaml``)."""
    return {
        "name": spec.name,
        "variants": ", ".join(spec.variants),
        "datasets": ", ".join(d.name for d in spec.datasets),
        "seeds": ", ".join(str(s) for s in spec.seeds),
        "model": spec.model.model_dump(),
        "scheduler": spec.scheduler.type,
        "max_t": spec.scheduler.max_t,
        "metric": spec.eval.metric,
        "n_real": spec.eval.n_real,
        "n_fake": spec.eval.n_fake,
        "eval_every": spec.eval.every,
        "batch_size": spec.train.batch_size,
        "search": f"optuna, {spec.search.num_samples} trials" if spec.search is not None else "grid",
    }


def real_strip(path: str, n_clips: int = 4, pool: int = 64) -> Any:
    """One image of ``n_clips`` real clips (spread over the first ``pool`` of the dataset) as rows of frames,
    like the trials' samples."""
    import numpy as np

    from vidgan.video import strip

    clips = np.concatenate(list(shards.iter_clips(path, limit=pool)))
    picked = np.linspace(0, len(clips) - 1, min(n_clips, len(clips))).round().astype(int)
    return strip(clips[picked], n_clips=n_clips)


def log_sweep_start(tracker: tracking.Tracker, spec: SweepSpec, name: str, view: str = "") -> None:
    """What the parent run holds from its start: flat parameters, the spec as ``spec.yaml`` (credentials removed),
    the datasets as inputs, a strip of real clips (image key ``samples``, step 0, one row block per dataset) to
    compare the trials' samples with, and a description."""
    import numpy as np
    import yaml

    tracker.log_params(sweep_params(spec))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.yaml"
        # the keys the spec set (the others are defaults): `vidgan sweep spec.yaml` runs the same sweep again
        written = tracking.redact_uris(spec.model_dump(mode="json", exclude_unset=True))
        path.write_text(yaml.safe_dump(written, sort_keys=False))
        tracker.log_artifact(path)
    try:
        tracker.log_inputs([tracking.dataset_input(d.path, d.name) for d in spec.datasets])
        strips = [real_strip(d.path) for d in spec.datasets]
        width = max(s.shape[1] for s in strips)
        strips = [np.pad(s, ((0, 8), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips]
        tracker.log_image(np.concatenate(strips)[:-8], key=tracking.SAMPLES_KEY, step=0)
    except Exception as exc:  # noqa: BLE001 - lineage and pictures are worth a warning, not a failed sweep
        log.warning("datasets not logged to the MLflow parent run: %s", exc)
    n = len(spec.variants) * len(spec.datasets) * len(spec.seeds)
    trials = f"{spec.search.num_samples} searched trials" if spec.search is not None else f"{n} trials"
    tracker.describe(
        f"Sweep **{name}** running: {trials} of {', '.join(spec.variants)} on "
        f"{', '.join(d.name for d in spec.datasets)}, seeds {', '.join(str(s) for s in spec.seeds)}, up to "
        f"{spec.scheduler.max_t} iterations ({spec.scheduler.type}). The spec: `spec.yaml` among the artifacts."
        + (f"\n\n[Compare the trials]({view}): sorted by best FVD, their samples side by side." if view else "")
    )


def _log_best_generator(ctx: SweepContext, run_id: str, checkpoint: Path) -> str:
    """Log the best trial's generator with mlflow.pytorch (see :func:`tracking.log_generator`); '' on failure."""
    try:
        # the generator the best checkpoint was chosen by: eval.generator's
        return tracking.log_generator(ctx.tracking_uri, run_id, checkpoint, ema=ctx.spec.eval.generator == "ema")
    except Exception as exc:  # noqa: BLE001 - the table and the checkpoint are there anyway
        log.warning("the best generator was not logged as an MLflow model: %s", exc)
        return ""


def describe_sweep(
    parent: tracking.Tracker, ctx: SweepContext, rows: list[report.TrialRow], model_uri: str = "",
    variants: list[Any] | None = None,
) -> None:
    """The parent run's final description (winner, ties, ranking, links to comparison.md and to every trial's samples,
    :mod:`tune_jobs.sample_grid`), its model tag, and the best FVD on the model's page."""
    from tune_jobs import sample_grid

    link = tracking.artifact_url(ctx.experiment_id, ctx.parent_run_id, "comparison.md")  # in the training view
    view = tracking.share_trials_view(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id, ctx.sweep,
                                      ctx.spec.eval.every)
    text = report.sweep_description(rows, link, model_uri, variants, compare_link=view)
    parent.describe(sample_grid.with_grid(ctx, rows, text))
    if model_uri:
        parent.set_tags({tracking.TAG_BEST_MODEL: model_uri})
        try:
            tracking.model_scores(ctx.tracking_uri, model_uri, ctx.sweep)
        except Exception as exc:  # noqa: BLE001 - the model is there anyway
            log.warning("the best FVD was not put on the logged model's page: %s", exc)


def run_sweep(
    spec_or_path: SweepSpec | str | os.PathLike,
    *,
    address: str | None = None,
    name: str | None = None,
    resume: bool = False,
    verbose: int = 1,
    overrides: Sequence[str] = (),
) -> SweepOutcome:
    """Validate, run (or resume) and report one sweep. Raises SpecError before anything runs if it cannot.

    ``overrides``: the ``key=value`` strings already applied to the spec (:mod:`tune_jobs.overrides`), kept as
    the parent run's tag ``vidgan.overrides``; its ``spec.yaml`` is the spec with them applied."""
    spec = spec_or_path if isinstance(spec_or_path, SweepSpec) else load_spec(spec_or_path)
    uri = tracking.resolve_tracking_uri(spec.mlflow.tracking_uri)
    tracking.check_tracking(uri)
    storage = _storage(spec)
    check_storage(storage)
    if resume:
        name = name or _latest_sweep(storage, spec.name + "-")
        if not name:
            raise SpecError(f"--resume: no sweep named {spec.name}-* under {storage}")
    name = name or f"{spec.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    exp_path = join_uri(storage, name)
    state = _read_state(exp_path)
    if resume and state is None:
        raise SpecError(f"--resume: nothing to resume at {exp_path}")
    if not resume and state is not None:
        raise SpecError(f"sweep {name!r} already exists at {exp_path}: use --resume or another --name")
    if resume and state is not None:
        spec = _pin_resumed(spec, state)

    prepare_datasets(spec)

    import ray

    if not ray.is_initialized():
        try:
            runtime.connect(address, include_dashboard=False if address is None else None,
                            log_to_driver=verbose > 1)
        except runtime.ClusterMismatch as exc:
            raise SpecError(str(exc)) from None
    if address is not None:
        try:
            runtime.check_cluster_python()
        except runtime.ClusterMismatch as exc:
            raise SpecError(str(exc)) from None
    gpus = ray.cluster_resources().get("GPU", 0)
    auto = spec.resources.gpu == "auto"
    spec = runtime.resolve_gpu(spec, gpus)
    log.info("trials: %s", runtime.describe_gpu(spec.resources.gpu, gpus, auto))
    if auto and gpus == 0 and address is not None:
        log.warning("resources.gpu auto: no GPU node is up now, so the trials run on CPUs; on an autoscaling "
                    "cluster set resources.gpu to a number so that pending trials bring GPU nodes up")
    prepare_real_statistics(spec)

    experiment_id = tracking.ensure_experiment(uri, spec.mlflow.experiment)
    if state is None:
        tags = {"vidgan.spec": spec.name}
        if overrides:
            tags[TAG_OVERRIDES] = " ".join(overrides)[:5000]
        parent = tracking.start_parent_run(uri, experiment_id, name, tags=tags)
        with parent_failed_on_error(uri, parent):
            tracker = tracking.Tracker(uri, parent)
            view = tracking.share_trials_view(uri, experiment_id, parent, name, spec.eval.every)
            log_sweep_start(tracker, spec, name, view)
            state = {"parent_run_id": parent, "experiment_id": experiment_id, "tracking_uri": uri, "sweep": name,
                     "settings": resolved_settings(spec)}
            _write_state(exp_path, state)
    parent = state["parent_run_id"]
    with parent_failed_on_error(uri, parent):
        return _run_tune(spec, state, uri, experiment_id, exp_path, storage, name, resume, verbose)


def _run_tune(spec: SweepSpec, state: dict[str, Any], uri: str, experiment_id: str, exp_path: str, storage: str,
              name: str, resume: bool, verbose: int) -> SweepOutcome:
    """The Tune part of :func:`run_sweep`, once the parent run is open."""
    from ray import tune

    from tune_jobs.restart_callback import RestartLog  # imports Ray: here, so `--check` imports none

    parent = state["parent_run_id"]
    ctx = SweepContext(spec=spec, sweep=name, tracking_uri=uri, experiment_id=experiment_id, parent_run_id=parent,
                       auth_env=tracking.auth_env(), verified_shards=shards.verified_stamps())
    for line in tracking.open_lines(uri, experiment_id, parent):
        log.info(line)

    trainable = tune.with_resources(
        tune.with_parameters(train_trial, ctx=ctx),
        trial_resources(cpu=spec.resources.cpu, gpu=spec.resources.gpu, data_cpu=spec.resources.data_cpu),
    )
    tune_path, tune_fs = tune_storage(storage)
    tune_exp = join_uri(tune_path, name)
    if resume and tune.Tuner.can_restore(tune_exp, storage_filesystem=tune_fs):
        log.info("resuming sweep %s from %s", name, redact_uri(exp_path))
        tuner = tune.Tuner.restore(tune_exp, trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=tune_fs)
    else:
        param_space, searcher, num_samples = _tune_setup(spec, name=name, tracking_uri=uri)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=spec.eval.scheduler_metric,  # the smoothed score (eval.smoothing)
                mode="min",
                scheduler=_scheduler(spec),
                search_alg=searcher,
                num_samples=num_samples,
                max_concurrent_trials=spec.max_concurrent_trials,
                reuse_actors=False,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=tune_path,
                storage_filesystem=tune_fs,
                stop={"iteration": spec.scheduler.max_t},
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                callbacks=[RestartLog()],  # one line per restart in this log; counted in the table and MLflow
                checkpoint_config=tune.CheckpointConfig(
                    # PBT exploits a donor's latest checkpoint: keep more, so that none is deleted under it
                    num_to_keep=4 if spec.scheduler.type == "pbt" else 2,
                    checkpoint_score_attribute=spec.eval.metric, checkpoint_score_order="min",
                ),
                verbose=verbose,
            ),
        )
    with tracking.OutageWatch(uri):  # one line when MLflow goes away, one when it is back
        results = tuner.fit()
    if tune_was_interrupted(tune_exp, tune_fs):
        # Tune catches Ctrl-C (SIGINT, SIGUSR1) itself: it saves its state with the trials still running, then marks
        # them terminated in memory and returns as if the sweep had ended, so they would read as stopped by ASHA.
        # Deliver what their checkpoints hold, then end as an interrupted sweep (parent and unfinished trial runs
        # KILLED, `--resume`)
        tracking.when_reachable(uri, lambda: deliver_spools(spec, ctx, results), "the sweep")
        tracking.when_reachable(
            uri, lambda: tracking.kill_running_trial_runs(uri, ctx.experiment_id, ctx.parent_run_id), "the sweep"
        )
        raise KeyboardInterrupt
    return finish_sweep(spec, ctx, exp_path, results)


def tune_was_interrupted(exp_path: str, fs: Any = None) -> bool:
    """Whether the Tune run saved at ``exp_path`` has trials that are not over (running, pending or paused in its
    saved state): a run that ends has every trial terminated or errored. A state that cannot be read counts as
    ended (with a warning): the table is then built as before."""
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(exp_path, storage_filesystem=fs).trials
    except Exception as exc:  # noqa: BLE001 - a finished sweep must not fail on this check
        log.warning("could not read Tune's saved state at %s to tell an interrupted sweep: %s", exp_path,
                    one_line(exc))
        return False
    return any(t.status not in ("TERMINATED", "ERROR") for t in trials)


# ------------------------------------------------------------------------------------------ report
def _rows(spec: SweepSpec, results: Any, runs: dict[str, Any]) -> list[report.TrialRow]:
    rows = []
    for result in results:
        config = result.config or {}
        trial_id = _trial_id(result)
        df = result.metrics_dataframe
        if df is not None and "iteration" in df:  # an evaluation recomputed after a restore counts once, the last
            df = df.drop_duplicates("iteration", keep="last")
        run = runs.get(trial_id)
        tags = run.data.tags if run else {}
        trial = spec.trial(config)
        row = report.TrialRow(
            trial_id=trial_id,
            variant=trial.variant_name,
            dataset=trial.dataset.name,
            seed=trial.seed,
            status="failed",
            params=report.format_params(trial.params),
        )
        df = df.dropna(subset=["fvd"]) if df is not None and spec.eval.metric in df else None
        if df is not None and len(df):  # not one FVD: the row stays unscored
            last = df.iloc[-1]
            row.best_fvd, row.final_fvd = float(df["fvd"].min()), float(last["fvd"])
            best = df.loc[df["fvd"].idxmin()]
            if "fvd_raw" in df:
                row.best_fvd_raw = float(df["fvd_raw"].min())
            if "fvd_ci_low" in df:
                row.best_fvd_ci_low, row.best_fvd_ci_high = float(best["fvd_ci_low"]), float(best["fvd_ci_high"])
            row.final_kvd, row.kvd_stderr = float(last["kvd"]), float(last["kvd_stderr"])
            row.iterations = int(last["iteration"])
            row.critic_updates = int(last["critic_updates"])
            row.paper_steps = int(last["paper_steps"])
            row.curve = [(int(i), float(f)) for i, f in zip(df["iteration"], df["fvd"], strict=True)]
        if tags.get(tracking.TAG_END) == "diverged":
            row.status, row.reason = "diverged", tags.get(tracking.TAG_REASON, "")
        elif result.error is not None:
            row.status, row.reason = "failed", str(result.error).strip().splitlines()[-1][:300]
        elif row.iterations >= spec.scheduler.max_t:
            row.status = "completed"
        else:
            row.status = "stopped_by_asha"
        rows.append(row)
    return rows


def _best_checkpoint(result: Any, metric: str) -> Any:
    """The trial's retained checkpoint with the lowest metric, or None (e.g. it failed before its first)."""
    scored = [(m[metric], c) for c, m in (result.best_checkpoints or []) if m.get(metric) == m.get(metric)]
    return min(scored, key=lambda x: x[0])[1] if scored else None


def _trial_id(result: Any) -> str:
    return (result.metrics or {}).get("trial_id") or Path(result.path).name.split("_")[-1]


def deliver_spools(spec: SweepSpec, ctx: SweepContext, results: Any) -> int:
    """Reconcile each trial's MLflow run with its last checkpoint (the source of truth): deliver what the
    checkpoint's spool holds and the run lacks (the last evaluation of a trial Tune stopped, what a tracking
    outage held back, what a run restored from an older MLflow backup misses). Creates the run of a trial that
    never reached MLflow. Returns how many records were sent."""
    from mlflow import MlflowClient

    from tune_jobs import spool

    client = MlflowClient(ctx.tracking_uri)
    sent = 0
    for result in results:
        if result.checkpoint is None:
            continue
        trial = spec.trial(result.config or {})
        trial_id = _trial_id(result)
        run_id, _ = tracking.find_or_create_trial_run(
            ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id, trial_id, run_name=f"{trial.run_name}-{trial_id}",
            tags={tracking.TAG_SWEEP: ctx.sweep, tracking.TAG_VARIANT: trial.variant_name,
                  tracking.TAG_DATASET: trial.dataset.name},
            reopen=False,
        )
        with result.checkpoint.as_directory() as folder:
            if (Path(folder) / tracking.SPOOL_DIR).is_dir():
                sent += spool.reconcile(client, run_id, Path(folder) / tracking.SPOOL_DIR)
    return sent


def finish_sweep(spec: SweepSpec, ctx: SweepContext, exp_path: str, results: Any) -> SweepOutcome:
    """Mark each trial's MLflow run with how it ended, log the best checkpoints, the table and the figure."""
    sent = tracking.when_reachable(ctx.tracking_uri, lambda: deliver_spools(spec, ctx, results), "the sweep")
    if sent:
        log.info("delivered %d spooled tracking records from the trials' checkpoints to MLflow", sent)
    runs = tracking.trial_runs(ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id)
    rows = _rows(spec, results, runs)
    restarts = {row.trial_id: _restarts(result) for row, result in zip(rows, results, strict=True)}
    for row in rows:
        row.restarts = len(restarts[row.trial_id])
        row.restart_causes = [r["cause"] for r in restarts[row.trial_id]]
    winner = next((r for r in report.sort_rows(rows) if not math.isnan(r.best_fvd)), None)
    model_uri = ""
    for row, result in zip(rows, results, strict=True):
        run = runs.get(row.trial_id)
        if run is None:
            continue
        tracker = tracking.Tracker(ctx.tracking_uri, run.info.run_id)
        tags = {tracking.TAG_END: row.status, tracking.TAG_PARAMS: row.params, **restart_tags(restarts[row.trial_id])}
        if row.reason:
            tags[tracking.TAG_REASON] = row.reason
        tracker.set_tags(tags)
        sentence = restart_sentence(restarts[row.trial_id])
        tracker.describe(report.describe_row(row) + (f"\n\n{sentence}" if sentence else ""))
        best = _best_checkpoint(result, spec.eval.metric)
        if best is not None:
            with best.as_directory() as folder:
                tracker.log_artifact(Path(folder) / CHECKPOINT_FILE, "best_checkpoint")
                if row is winner:
                    model_uri = _log_best_generator(ctx, run.info.run_id, Path(folder) / CHECKPOINT_FILE)
        tracker.finish("FAILED" if row.status in ("failed", "diverged") else "FINISHED")

    # the same tables `vidgan report` rebuilds from MLflow (tune_jobs/history.py): one code path for both
    comparison = report.Comparison(rows, n_seeds=len(spec.seeds))
    variants, table = comparison.variants, comparison.table
    saved = report.iterations_saved(rows, spec.scheduler.max_t)
    parent = tracking.Tracker(ctx.tracking_uri, ctx.parent_run_id)
    with tempfile.TemporaryDirectory() as tmp:
        for path in report.write_tables(comparison, Path(tmp), spec.eval.metric):
            parent.log_artifact(path)
    finished = [r for r in rows if not math.isnan(r.best_fvd)]
    # the sweep's own figures under sweep/: the trials' best_fvd column and chart stay theirs alone
    metrics: dict[str, float] = {"sweep/trials": len(rows), "sweep/iterations_saved_fraction": saved}
    if finished:
        metrics["sweep/best_fvd"] = min(r.best_fvd for r in finished)
    # `--resume` of a finished sweep finishes it again: log only what is not already there (it logged each twice)
    logged = tracking.retry(lambda: parent.client.get_run(parent.run_id).data.metrics)
    metrics = {k: v for k, v in metrics.items() if logged.get(k) != float(v)}
    if metrics:
        parent.log_metrics(metrics, step=0)
    parent.set_tags({f"vidgan.trials.{s}": str(sum(r.status == s for r in rows)) for s in report.TRIAL_ENDS})
    describe_sweep(parent, ctx, rows, model_uri, variants)
    parent.finish("FINISHED")
    return SweepOutcome(
        name=ctx.sweep, path=exp_path, parent_run_id=ctx.parent_run_id, tracking_uri=ctx.tracking_uri,
        rows=rows, table=table, iterations_saved=saved, variants=variants,
        restarts={k: v for k, v in restarts.items() if v},
    )


def _restarts(result: Any) -> list[dict[str, Any]]:
    """A trial's restarts as the driver recorded them in its folder (tune_jobs.restarts)."""
    fs, path = result.filesystem, result.path
    if fs is None:
        fs, path = resolve_fs(path)
    return read_restarts(fs, path)
