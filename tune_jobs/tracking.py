"""MLflow tracking for sweeps: one parent run per sweep, one nested run per trial.

All calls go through :class:`mlflow.MlflowClient` with explicit run ids (no fluent global state), so a
trial restarted from a checkpoint finds and continues its own run (looked up by the tag
``vidgan.trial_id``) instead of opening a duplicate. Writes are retried briefly: several trial
processes share one SQLite file in the embedded default.
"""

from __future__ import annotations

import base64
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag

from vidgan.files import redact_uri, split_userinfo

if TYPE_CHECKING:
    import numpy as np

    from tune_jobs.spec import SweepSpec, Trial

T = TypeVar("T")

TAG_SWEEP = "vidgan.sweep"
TAG_KIND = "vidgan.kind"
TAG_TRIAL = "vidgan.trial_id"
TAG_VARIANT = "vidgan.variant"
TAG_DATASET = "vidgan.dataset"
TAG_END = "vidgan.end"  # a report.TrialEnd
TAG_REASON = "vidgan.failure_reason"
TAG_PARENT = "mlflow.parentRunId"
TAG_CLONED_FROM = "vidgan.pbt.cloned_from"  # the trial whose checkpoint a PBT exploit copied (the latest)
TAG_CLONED_AT = "vidgan.pbt.cloned_at_iteration"
TAG_EXPLOITS = "vidgan.pbt.exploits"  # every exploit of this trial: "<donor>@<iteration>,..."


#: MLflow's credentials for a tracking server (basic auth or a bearer token), read from the environment
AUTH_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store cannot be reached or written."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Spec value, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``; local paths made absolute.

    Trials run with their own folder as working directory, so a relative SQLite path would point
    somewhere else in every trial.

    Credentials in the URI (``http://user:password@host``) are taken out of it and set as
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, which MLflow sends as basic auth; the URI
    returned (and everything printed, logged or saved) has none. Trials get them through :func:`auth_env`.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    uri, user, password = split_userinfo(uri)
    if user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
        if password is not None:
            os.environ["MLFLOW_TRACKING_PASSWORD"] = password
        if split_userinfo(os.environ.get("MLFLOW_TRACKING_URI", ""))[1] is not None:
            os.environ["MLFLOW_TRACKING_URI"] = redact_uri(os.environ["MLFLOW_TRACKING_URI"])
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    return uri


def local_artifact_root(uri: str) -> str | None:
    """Artifact root next to a SQLite store (``mlartifacts/``); None for servers (they proxy artifacts)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).parent.joinpath("mlartifacts").resolve().as_uri()
    return None


def auth_env() -> dict[str, str]:
    """The MLflow credentials of this process's environment, for the trials: Ray workers on other nodes do
    not inherit the driver's environment, so they travel in the :class:`SweepContext` (never printed)."""
    return {k: os.environ[k] for k in AUTH_ENV if os.environ.get(k)}


def check_tracking(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast with a clear error when the store is unreachable (before any trial starts)."""
    shown = redact_uri(uri)
    if uri.startswith(("http://", "https://")):
        request = urllib.request.Request(shown.rstrip("/") + "/health")
        env = auth_env()
        if "MLFLOW_TRACKING_TOKEN" in env:
            request.add_header("Authorization", f"Bearer {env['MLFLOW_TRACKING_TOKEN']}")
        elif "MLFLOW_TRACKING_USERNAME" in env:
            pair = f"{env['MLFLOW_TRACKING_USERNAME']}:{env.get('MLFLOW_TRACKING_PASSWORD', '')}".encode()
            request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                if response.status != 200:
                    raise TrackingUnavailable(f"MLflow server {shown} answered {response.status} on /health")
        except urllib.error.HTTPError as exc:
            raise TrackingUnavailable(f"MLflow server {shown} answered {exc.code} on /health") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise TrackingUnavailable(f"MLflow tracking server {shown} is unreachable: {reason}") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingUnavailable(f"MLflow store {uri}: folder {folder} does not exist or is not writable")
    try:
        retry(lambda: MlflowClient(uri).search_experiments(max_results=1), attempts=2)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not usable"
        detail = " ".join(str(exc).split())[:300].replace(uri, shown)
        raise TrackingUnavailable(f"MLflow tracking store {shown} is not usable: {detail}") from None


def retry(fn: Callable[[], T], attempts: int = 6, delay_s: float = 0.2) -> T:
    """Call ``fn``, retrying transient store errors (e.g. SQLite 'database is locked') with backoff."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(delay_s * 2**attempt)
    raise AssertionError("unreachable")


def redact_uris(value: Any) -> Any:
    """``value`` (nested dicts, lists, strings) with the userinfo of every URI in it removed, for logging."""
    if isinstance(value, dict):
        return {k: redact_uris(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_uris(v) for v in value]
    return redact_uri(value) if isinstance(value, str) else value


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b": "value"} strings, for MLflow params."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:6000]
    return out


class Tracker:
    """A thin, retried wrapper over one MLflow run."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.client = MlflowClient(uri)
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, v) for k, v in flatten(params).items()]
        existing = self.client.get_run(self.run_id).data.params
        items = [p for p in items if p.key not in existing]  # a restarted trial logs them once only
        for i in range(0, len(items), 100):
            batch = items[i : i + 100]
            retry(lambda b=batch: self.client.log_batch(self.run_id, params=b))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        retry(lambda: self.client.log_batch(self.run_id, metrics=items))

    def set_tags(self, tags: dict[str, str]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        retry(lambda: self.client.log_batch(self.run_id, tags=items))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def finish(self, status: str = "FINISHED") -> None:
        retry(lambda: self.client.set_terminated(self.run_id, status))


def ensure_experiment(uri: str, name: str) -> str:
    """The experiment's id, creating it (with a local artifact root next to a SQLite store) if needed."""
    client = MlflowClient(uri)
    exp = retry(lambda: client.get_experiment_by_name(name))
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise TrackingUnavailable(f"MLflow experiment {name!r} is deleted; restore it or pick another name")
        return exp.experiment_id
    return retry(lambda: client.create_experiment(name, artifact_location=local_artifact_root(uri)))


def start_parent_run(uri: str, experiment_id: str, sweep: str, tags: dict[str, str] | None = None) -> str:
    client = MlflowClient(uri)
    run = retry(
        lambda: client.create_run(
            experiment_id, run_name=sweep, tags={TAG_SWEEP: sweep, TAG_KIND: "sweep", **(tags or {})}
        )
    )
    return run.info.run_id


def find_or_create_trial_run(
    uri: str, experiment_id: str, parent_run_id: str, trial_id: str, run_name: str, tags: dict[str, str]
) -> tuple[str, bool]:
    """(run id, created) of the nested run of a trial; an existing one is reused after a restart."""
    client = MlflowClient(uri)
    found = retry(
        lambda: client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_TRIAL}` = '{trial_id}' and tags.`{TAG_PARENT}` = '{parent_run_id}'",
            max_results=1,
        )
    )
    if found:
        run_id = found[0].info.run_id
        if found[0].info.status != RunStatus.to_string(RunStatus.RUNNING):
            retry(lambda: client.update_run(run_id, status="RUNNING"))
        return run_id, False
    run = retry(
        lambda: client.create_run(
            experiment_id,
            run_name=run_name,
            tags={TAG_PARENT: parent_run_id, TAG_TRIAL: trial_id, TAG_KIND: "trial", **tags},
        )
    )
    return run.info.run_id, True


def trial_runs(uri: str, experiment_id: str, parent_run_id: str) -> dict[str, Any]:
    """Nested runs of a sweep by trial id."""
    client = MlflowClient(uri)
    runs = retry(
        lambda: client.search_runs([experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'")
    )
    return {r.data.tags.get(TAG_TRIAL): r for r in runs}


@dataclass(frozen=True)
class SweepContext:
    """What every trial of a sweep shares (passed with ``tune.with_parameters``)."""

    spec: SweepSpec
    sweep: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    # the MLflow credentials the trials need (:func:`auth_env`); left out of repr so they are never printed
    auth_env: dict[str, str] = field(default_factory=dict, repr=False, compare=False)


class TrialLogger:
    """Where a trial's results go, with one :meth:`report` per evaluation: its nested MLflow run (params,
    metrics, sample videos, FVD curve) and its Prometheus gauges.

    Opening it finds or creates the trial's run (a restarted trial continues its own run) and refuses to
    restart a trial that diverged before.
    """

    def __init__(self, ctx: SweepContext, trial: Trial, trial_id: str) -> None:
        from tune_jobs.metrics import TrialMetrics

        self.ctx, self.trial, self.trial_id = ctx, trial, trial_id
        os.environ.update(ctx.auth_env)  # MLflow reads them from the environment at each request
        self.run_id, _ = find_or_create_trial_run(
            ctx.tracking_uri,
            ctx.experiment_id,
            ctx.parent_run_id,
            trial_id,
            run_name=f"{trial.run_name}-{trial_id}",
            tags={TAG_SWEEP: ctx.sweep, TAG_VARIANT: trial.variant_name, TAG_DATASET: trial.dataset.name},
        )
        self.tracker = Tracker(ctx.tracking_uri, self.run_id)
        previous = self.tracker.client.get_run(self.run_id).data.tags
        if previous.get(TAG_END) == "diverged":  # a restart of a diverged trial: fail again at once
            raise RuntimeError(f"trial {trial_id} diverged earlier: {previous.get(TAG_REASON)}")
        spec = ctx.spec
        self.tracker.log_params(
            {
                "variant": trial.variant_name,
                "dataset": trial.dataset.name,
                "dataset_path": redact_uri(trial.dataset.path),
                "seed": trial.seed,
                "model": spec.model.model_dump(),
                "loss": trial.variant.model_dump(),
                "train": trial.train_config.model_dump(),
                "eval": spec.eval.model_dump(),
                "resources": spec.resources.model_dump(),
            }
        )
        self.gauges = TrialMetrics(ctx.sweep, trial_id, trial.variant_name)

    def report(
        self, result: dict[str, float], history: list[dict[str, float]], samples: np.ndarray | None, folder: Path
    ) -> None:
        """Log one evaluation: metrics at step ``result["iteration"]``, gauges, the sample grid (uint8 clips
        [N, T, H, W, 3], as GIF and MP4) and the curve of the sweep's metric so far (files go to ``folder``)."""
        from tune_jobs.report import plot_curves

        step = int(result["iteration"])
        self.gauges.record(**{k: result[k] for k in self.gauges.KEYS if k in result})
        self.tracker.log_metrics(result, step=step)
        if samples is not None and len(samples):
            from vidgan.video import tile, write_video

            grid = tile(samples)
            for suffix in (".gif", ".mp4"):
                self.tracker.log_artifact(write_video(grid, folder / f"samples_{step:07d}{suffix}"), "samples")
        metric = self.ctx.spec.eval.metric
        curve = [(int(h["iteration"]), float(h[metric])) for h in history]
        self.tracker.log_artifact(plot_curves({self.trial.run_name: curve}, folder / f"{metric}_curve.png", metric))

    def restored(self, owner: str | None, iteration: int) -> None:
        """Note where a restored checkpoint came from: another trial's means PBT cloned that trial into this one."""
        if owner is None or owner == self.trial_id:
            return
        tags = self.tracker.client.get_run(self.run_id).data.tags
        exploits = [e for e in tags.get(TAG_EXPLOITS, "").split(",") if e] + [f"{owner}@{iteration}"]
        self.tracker.set_tags(
            {TAG_CLONED_FROM: owner, TAG_CLONED_AT: str(iteration), TAG_EXPLOITS: ",".join(exploits)[-5000:]}
        )

    def completed(self) -> None:
        self.tracker.set_tags({TAG_END: "completed"})

    def diverged(self, exc: Exception) -> None:
        """Mark the run diverged (a restart of this trial then fails at once) and FAILED."""
        self.tracker.set_tags({TAG_END: "diverged", TAG_REASON: str(exc)})
        self.tracker.finish("FAILED")

    def finish(self) -> None:
        self.tracker.finish("FINISHED")
