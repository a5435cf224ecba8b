"""MLflow tracking for sweeps: one parent run per sweep, one nested run per trial.

All calls go through :class:`mlflow.MlflowClient` with explicit run ids (no fluent global state), so a
trial restarted from a checkpoint finds and continues its own run (looked up by the tag
``vidgan.trial_id``) instead of opening a duplicate. Writes are retried briefly: several trial
processes share one SQLite file in the embedded default.
"""

from __future__ import annotations

import base64
import contextlib
import os
import threading
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
TAG_PARAMS = "vidgan.params"  # a trial's searched hyperparameters as the table shows them (report.format_params)
TAG_PARENT = "mlflow.parentRunId"
TAG_CLONED_FROM = "vidgan.pbt.cloned_from"  # the trial whose checkpoint a PBT exploit copied (the latest)
TAG_CLONED_AT = "vidgan.pbt.cloned_at_iteration"
TAG_EXPLOITS = "vidgan.pbt.exploits"  # every exploit of this trial: "<donor>@<iteration>,..."
TAG_NOTE = "mlflow.note.content"  # a run's description in the MLflow UI (Markdown)
TAG_BEST_MODEL = "vidgan.best_model_uri"  # on the parent: the winner's generator (mlflow.pytorch.load_model)

#: Tune result key -> MLflow metric name. MLflow's charts group by the part before the first "/", so the
#: training curves sort into loss/, train/, throughput/ and eval/ sections. The names Tune's schedulers and
#: searchers read stay flat in the Tune result and keep their names in MLflow: ``fvd``, ``kvd`` and any key not
#: listed here (the smoothed score and the interval of #11, PBT's ``hp_*``). ``iteration`` is every metric's
#: step, not a metric of its own. docs/tracking.md ("In MLflow") lists them all.
MLFLOW_METRIC_NAMES = {
    "critic_loss": "loss/critic",
    "wasserstein": "loss/wasserstein",
    "penalty": "loss/penalty",
    "drift": "loss/drift",
    "generator_loss": "loss/generator",
    "grad_norm": "train/grad_norm",
    "critic_updates": "train/critic_updates",
    "generator_updates": "train/generator_updates",
    "paper_steps": "train/paper_steps",
    "iterations_per_s": "throughput/iterations_per_s",
    "clips_per_s": "throughput/clips_per_s",
    "data_wait_fraction": "throughput/data_wait_fraction",
    "gpu_memory_bytes": "throughput/gpu_memory_bytes",
    "kvd_stderr": "eval/kvd_stderr",
    "eval_time_s": "eval/time_s",
}
#: result keys that are the same at every evaluation of a trial: MLflow parameters (logged once), not metrics
PARAM_KEYS = ("n_fake", "n_real")
#: the step of every metric (generator iterations), not logged as a metric
STEP_KEY = "iteration"
#: image key of the sample strips (``MlflowClient.log_image``): MLflow shows them per step, runs side by side
SAMPLES_KEY = "samples"
#: a trial's latest samples, small, as a plain artifact (replaced at each evaluation) that its description shows first:
#: what a trial's page shows on first sight (MLflow's image cards open at step 0, under 49 parameters)
GLANCE_PATH = "samples/latest.png"
GLANCE_HEIGHT = 100  # pixels, at most: the MLflow UI folds a description after 150
#: the scores a person sorts trials by (the video distances), logged a second time under ``distances/``: the MLflow UI
#: orders a run's chart sections by name, case aside, with the unprefixed ones ("Model metrics": ``fvd``, ``kvd``, ...)
#: after every prefixed one, so these come first, before eval/ and loss/ (seen in MLflow 3.17). The flat names stay,
#: for Tune, ``vidgan report``, the saved view and the runs table's sorting.
SCORES_SECTION = "distances"
SCORE_KEYS = ("fvd", "best_fvd", "kvd")


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


#: how long ``check_tracking`` waits for the store to answer an API request (a server can answer /health and
#: then hang: MLflow's own client would block for minutes in its retries); ``VIDGAN_TRACKING_TIMEOUT_S`` overrides
API_TIMEOUT_S = 20.0


def check_health(uri: str, timeout_s: float = 5.0) -> None:
    """Raise :class:`TrackingUnavailable` when a tracking server does not answer ``/health`` (one request, no
    retries); a local store always passes."""
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
        except ValueError as exc:  # http.client.InvalidURL: its text may quote the URI, shown instead
            detail = type(exc).__name__
            raise TrackingUnavailable(f"MLflow tracking URI {shown} is not a valid URL ({detail})") from None


def foreign_sqlite(path: Path) -> str | None:
    """Why the existing file ``path`` must not be opened as an MLflow SQLite store, or None: MLflow adds its tables
    to any SQLite database it opens, so a file the user made for something else (or not a database at all) would
    be changed. An empty file, or a database holding MLflow's tables, is fine."""
    import sqlite3

    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        return f"{path} is not a SQLite database ({exc}); MLflow would not open it"
    if tables and not {"experiments", "runs"} <= tables:
        return (f"{path} is a SQLite database without MLflow's tables ({', '.join(sorted(tables)[:3])}, ...): "
                "not an MLflow store; opening it would add MLflow's tables to it")
    return None


def check_tracking(uri: str, timeout_s: float = 5.0, api_timeout_s: float | None = None) -> None:
    """Fail fast with a clear error when the store is unreachable (before any trial starts): /health within
    ``timeout_s``, then one API request (a search for one experiment) within ``api_timeout_s`` (default
    :data:`API_TIMEOUT_S`)."""
    shown = redact_uri(uri)
    check_health(uri, timeout_s)
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingUnavailable(f"MLflow store {uri}: folder {folder} does not exist or is not writable")
        problem = foreign_sqlite(Path(uri[len("sqlite:///") :]))
        if problem:
            raise TrackingUnavailable(f"MLflow store {uri}: {problem}")
    if api_timeout_s is None:
        api_timeout_s = float(os.environ.get("VIDGAN_TRACKING_TIMEOUT_S") or API_TIMEOUT_S)
    outcome: list[BaseException | None] = []

    def search() -> None:
        try:
            retry(lambda: MlflowClient(uri).search_experiments(max_results=1), attempts=2)
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - any failure here means "not usable"
            outcome.append(exc)

    # a daemon thread: a request that never returns is left behind, not waited for
    worker = threading.Thread(target=search, name="vidgan-check-tracking", daemon=True)
    worker.start()
    worker.join(api_timeout_s)
    if not outcome:
        raise TrackingUnavailable(
            f"MLflow tracking store {shown} did not answer an API request (search experiments) within "
            f"{api_timeout_s:g} s{' although /health answered' if uri.startswith(('http://', 'https://')) else ''}: "
            "the server is overloaded or hung; check it (and its database), then run again"
        )
    if outcome[0] is not None:
        detail = " ".join(str(outcome[0]).split())[:300].replace(uri, shown)
        raise TrackingUnavailable(f"MLflow tracking store {shown} is not usable: {detail}")


#: how long the end of a sweep waits for an unreachable tracking server before it stops with one line
WAIT_ENV = "VIDGAN_TRACKING_WAIT_S"


def when_reachable(uri: str, fn: Callable[[], T], what: str, wait_s: float | None = None) -> T:
    """``fn()`` once the tracking server answers: while it does not, wait (one log line when it goes away, one
    when it is back) up to ``wait_s`` (default ``$VIDGAN_TRACKING_WAIT_S`` or an hour), then raise
    :class:`TrackingUnavailable`. An error of ``fn`` while the server answers is raised as is."""
    import logging

    from tune_jobs.spool import Outage

    outage = Outage(what, report=logging.getLogger("tune_jobs.sweep").warning)
    wait_s = float(os.environ.get(WAIT_ENV, 3600)) if wait_s is None else wait_s
    deadline, delay = time.monotonic() + wait_s, 1.0
    while True:
        try:
            check_health(uri)
            value = fn()
        except Exception as exc:
            try:
                check_health(uri)
            except TrackingUnavailable as down:
                outage.failed(down)
                if time.monotonic() > deadline:
                    raise TrackingUnavailable(
                        f"MLflow at {redact_uri(uri)} stayed unreachable for {wait_s:.0f} s; nothing is lost: the "
                        "checkpoints hold it, and `vidgan sweep SPEC --resume` delivers it") from None
                time.sleep(delay)
                delay = min(2 * delay, 10.0)
                continue
            raise exc from None
        outage.ok()
        return value


class OutageWatch:
    """While a sweep runs: probe the tracking server every ``every_s`` seconds and say once in the sweep's log
    that it went away (the trials train on and keep what they log) and once that it is back."""

    def __init__(self, uri: str, every_s: float = 5.0) -> None:
        import logging
        import threading

        from tune_jobs.spool import Outage

        self.uri, self.every_s = uri, every_s
        self.outage = Outage("every trial", report=logging.getLogger("tune_jobs.sweep").warning)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="vidgan-mlflow-watch", daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                check_health(self.uri, timeout_s=min(self.every_s, 5.0))
            except TrackingUnavailable as exc:
                self.outage.failed(exc)
            else:
                self.outage.ok()

    def __enter__(self) -> OutageWatch:
        if self.uri.startswith(("http://", "https://")):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()


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

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """A uint8 image [H, W, 3] under ``key`` at ``step`` (MLflow's image charts show it with a step slider)."""
        retry(lambda: self.client.log_image(self.run_id, image, key=key, step=step))

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        retry(lambda: self.client.log_figure(self.run_id, figure, artifact_file))

    def log_inputs(self, inputs: list[Any]) -> None:
        """``mlflow.entities.DatasetInput`` s (MLflow keeps one of each dataset and context per run)."""
        retry(lambda: self.client.log_inputs(self.run_id, datasets=inputs))

    def describe(self, text: str) -> None:
        """The run's description in the MLflow UI (Markdown), with the run's latest samples below its first line
        where it has them (a trial: :data:`GLANCE_PATH`)."""
        if GLANCE_ALT not in text:
            try:
                sizes = {a.path: a.file_size for a in self.client.list_artifacts(self.run_id, "samples")}
            except Exception:  # noqa: BLE001 - the description without the picture
                sizes = {}
            if GLANCE_PATH in sizes:
                text = with_glance(text, self.run_id, sizes[GLANCE_PATH] or "")
        self.set_tags({TAG_NOTE: text[:50000]})

    def finish(self, status: str = "FINISHED") -> None:
        retry(lambda: self.client.set_terminated(self.run_id, status))


# ------------------------------------------------------------------------------------------ links
GLANCE_ALT = "latest samples"


def with_glance(text: str, run_id: str, version: object = "") -> str:
    """A run's description with its :data:`GLANCE_PATH` image below its first paragraph, served by the UI's own
    ``get-artifact`` (a relative link: the UI that shows the description serves the file). ``version`` changes the
    link when the file changes, so that a browser shows the new one."""
    from urllib.parse import quote

    link = f"get-artifact?path={quote(GLANCE_PATH, safe='')}&run_uuid={run_id}&v={quote(str(version))}"
    first, _, rest = text.partition("\n\n")  # below the first line (how the trial stands), above the fold
    return f"{first}\n\n![{GLANCE_ALT}]({link})" + (f"\n\n{rest}" if rest else "")


def glance(samples: np.ndarray, height: int = GLANCE_HEIGHT) -> np.ndarray:
    """A small picture of clips [N, T, H, W, 3] for a description: two clips as rows of 8 frames, at most ``height``
    pixels high."""
    from vidgan.video import strip

    rows = 2 if len(samples) > 1 else 1
    frame = samples.shape[2] + 1
    return strip(samples, n_clips=rows, n_frames=8, scale=max(1, height // (rows * frame)))


def model_scores(uri: str, model_uri: str, sweep: str = "") -> None:
    """Put the best FVD on the page of a logged model (``models:/<id>``, as :func:`log_generator` returns): its source
    run's ``best_fvd``, its iteration and ``kvd``, with the trial's variant, dataset and seed, as the model's
    parameters. Not as model metrics: MLflow records a metric logged for a model in its source run's history too, so
    the trial's run would hold ``best_fvd`` and ``kvd`` twice at one step (tests/test_tracking_outage.py compares that
    history with what Tune received)."""
    client = MlflowClient(uri)
    model_id = model_uri.rsplit("/", 1)[-1]
    model = retry(lambda: client.get_logged_model(model_id))
    run = retry(lambda: client.get_run(model.source_run_id))
    metrics = run.data.metrics
    if "best_fvd" not in metrics:
        return
    params = {k: f"{metrics[k]:.6g}" for k in ("best_fvd", "best_fvd_iteration", "kvd") if k in metrics}
    params.update({k: run.data.params[k] for k in ("variant", "dataset", "seed") if k in run.data.params})
    params.update({"trial_run_id": run.info.run_id, **({"sweep": sweep} if sweep else {})})
    params = {k: v for k, v in params.items() if k not in model.params}  # log_model copies the run's; none twice
    if params:
        retry(lambda: client.log_model_params(model_id, params))


def ui_address(uri: str) -> str:
    """Where the MLflow UI of a tracking store is: the server itself (credentials removed), or for a local
    store the address ``vidgan ui`` (and ``mlflow ui``) listens on by default."""
    if uri.startswith(("http://", "https://")):
        return redact_uri(uri).rstrip("/")
    return "http://127.0.0.1:5000"


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run, in the training (not GenAI) view of its experiment."""
    return f"{ui_address(uri)}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def artifact_url(experiment_id: str, run_id: str, path: str) -> str:
    """The UI path (``#/experiments/...``, relative to the UI's address) of one artifact of a run, in the training
    view: without ``workflowType`` the MLflow 3 UI opens it in its GenAI view."""
    return f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/{path}?workflowType=machine_learning"


def open_lines(uri: str, experiment_id: str, run_id: str) -> list[str]:
    """What to print so that a person can open a run: its link, and for a local store the command that
    serves the UI and opens it (``vidgan ui``: the venv's MLflow, whatever PATH holds)."""
    url = run_url(uri, experiment_id, run_id)
    if uri.startswith(("http://", "https://")):
        return [f"MLflow: {url}"]
    flag = "" if uri == resolve_tracking_uri(None) else f" --tracking-uri {redact_uri(uri)}"
    return [f"MLflow: `vidgan ui{flag}` serves it and opens {url}"]


def run_open_lines(uri: str, run_id: str) -> list[str]:
    """:func:`open_lines` of a run known by its id alone."""
    return open_lines(uri, retry(lambda: MlflowClient(uri).get_run(run_id)).info.experiment_id, run_id)


#: the experiment tag prefix under which the MLflow UI keeps a shared view (its "Share view" button)
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."


def share_trials_view(uri: str, experiment_id: str, parent_run_id: str, sweep: str, step: int) -> str:
    """Save an MLflow shared view of a sweep's trials and return its UI path (``#/experiments/...``, relative
    to the UI's address). The view: the trial runs of this sweep sorted by ``best_fvd`` with the variant, seed,
    best_fvd and how-it-ended columns, and a "Compare variants" chart section: the ``samples`` images of every
    trial side by side at ``step`` with a step slider (run parameters hidden, which would push each image onto
    a line of its own), the best_fvd bars and the fvd curves. The state is the MLflow 3 UI's own JSON (what its
    Share button saves); a UI that cannot read it says so and shows the default view."""
    import json
    import re

    key = "vidgan-" + re.sub(r"[^A-Za-z0-9_-]", "-", sweep)[:100]
    section = "vidgan-compare"
    chart = {"metricSectionId": section, "deleted": False, "isGenerated": False, "runsCountToCompare": 100}
    state = {
        "searchFilter": f"tags.`{TAG_PARENT}` = '{parent_run_id}'",
        "orderByKey": "metrics.`best_fvd`",
        "orderByAsc": True,
        "selectedColumns": ["params.`variant`", "params.`dataset`", "params.`seed`", "metrics.`best_fvd`",
                            "metrics.`best_fvd_iteration`", "metrics.`fvd`", f"tags.`{TAG_END}`"],
        "compareRunCharts": [
            {**chart, "uuid": f"{key}-samples", "type": "IMAGE", "imageKeys": [SAMPLES_KEY], "step": step,
             "showRunParams": False},
            {**chart, "uuid": f"{key}-best", "type": "BAR", "metricKey": "best_fvd"},
            {**chart, "uuid": f"{key}-fvd", "type": "LINE", "metricKey": "fvd", "selectedMetricKeys": ["fvd"],
             "xAxisKey": "step", "scaleType": "linear", "lineSmoothness": 0},
        ],
        "compareRunSections": [{"uuid": section, "name": "Compare variants", "display": True, "isReordered": False,
                                "deleted": False, "isGenerated": False}],
        "isAccordionReordered": True,
    }
    client = MlflowClient(uri)
    retry(lambda: client.set_experiment_tag(experiment_id, SHARED_VIEW_PREFIX + key, json.dumps(state)))
    return (f"#/experiments/{experiment_id}/runs?viewStateShareKey={key}&compareRunsMode=CHART"
            "&workflowType=machine_learning")


# ------------------------------------------------------------------------------------------ lineage
def dataset_input(path: str, name: str, context: str = "train") -> Any:
    """A shard directory as an MLflow dataset input: source = the directory (credentials removed), digest =
    its manifest's sha256 (cut to the 36 characters MLflow keeps; the whole one is the input tag
    ``vidgan.manifest_sha256``), schema = one uint8 clip [T, H, W, 3]."""
    import warnings

    import numpy as np
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.types import Schema, TensorSpec

    from vidgan import shards

    shard_set = shards.describe(path)
    shown = redact_uri(path)
    with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways": all of them local
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(shown if "://" in shown else str(Path(shown).resolve()))
    schema = Schema([TensorSpec(np.dtype(np.uint8), (-1, *shard_set.clip_shape), name="clip")])
    dataset = MetaDataset(source, name=name, digest=shard_set.manifest_sha256[:36], schema=schema)
    tags = [InputTag("mlflow.data.context", context), InputTag("vidgan.manifest_sha256", shard_set.manifest_sha256),
            InputTag("vidgan.clips", str(shard_set.clips))]
    return DatasetInput(dataset._to_mlflow_entity(), tags=tags)


def start_system_metrics(uri: str, run_id: str, resume: bool) -> Any:
    """MLflow's monitor of this process's machine (CPU, memory, disk, network; GPUs through nvidia-ml-py where it
    is installed), logging ``system/*`` metrics into the run every 10 s (``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``)
    until :meth:`finish` or the run ends. None, with a warning, where it cannot run (psutil missing)."""
    import logging

    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, resume_logging=resume, tracking_uri=uri)
    except Exception as exc:  # noqa: BLE001 - the trial trains on without system metrics
        logging.getLogger(__name__).warning("no MLflow system metrics: %s", exc)
        return None
    monitor.start()
    return monitor


def log_generator(
    uri: str, run_id: str, checkpoint: str | os.PathLike, name: str = "generator", ema: bool = True
) -> str:
    """Log the generator of a trainer checkpoint (its moving average where it has one and ``ema``) to ``run_id`` with
    ``mlflow.pytorch.log_model`` as a ``torch.export`` program ("pt2"), not a pickle: it loads without vidgan
    and without unpickling anything (MLflow checks the archive; it loads with
    ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``). ``mlflow.pytorch.load_model(uri)(z)`` with ``z``
    [N, z_dim] float32 (any N; batch statistics, as in training and evaluation, so a clip depends on its batch)
    makes clips [N, 3, T, H, W] in [-1, 1]. Returns the model's URI (``models:/...``)."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from vidgan.trainer import load_generator

    generator, model = load_generator(checkpoint, ema=ema)
    # clips in the pixel range whatever the output layer (``output: linear`` leaves it to the critic; samples, FVD and
    # the score clamp it too): Hardtanh is clamp(-1, 1)
    generator = torch.nn.Sequential(generator, torch.nn.Hardtanh()).eval()
    z = torch.randn(2, model.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        clips = generator(z)
    signature = infer_signature(z.numpy(), clips.numpy())
    requirements = [f"torch=={torch.__version__.split('+')[0]}", "numpy"]
    # MLflow files a logged model under the active experiment, else the Default one, not under its run's: make the
    # run's experiment the active one for the call (the sweep's, so the model shows on the run and in its Models tab)
    from mlflow.tracking import fluent

    experiment_id = MlflowClient(uri).get_run(run_id).info.experiment_id
    active = fluent._active_experiment_id
    fluent._active_experiment_id = experiment_id
    try:
        with _use_tracking_uri(uri):  # log_model reads the global tracking URI; the run is named explicitly
            info = mlflow.pytorch.log_model(  # the batch dimension stays dynamic: the example has 2 rows
                generator, name=name, run_id=run_id, signature=signature, input_example=z.numpy(),
                pip_requirements=requirements, serialization_format="pt2",
            )
    finally:
        fluent._active_experiment_id = active
    return info.model_uri


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
    uri: str, experiment_id: str, parent_run_id: str, trial_id: str, run_name: str, tags: dict[str, str],
    reopen: bool = True,
) -> tuple[str, bool]:
    """(run id, created) of the nested run of a trial; an existing one is reused after a restart, and set running
    again when ``reopen`` (a trial that trains); the driver's reconciliation leaves its status alone."""
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
        if reopen and found[0].info.status != RunStatus.to_string(RunStatus.RUNNING):
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


def kill_running_trial_runs(uri: str, experiment_id: str, parent_run_id: str) -> int:
    """Mark a sweep's trial runs still RUNNING as KILLED (their trials stopped with the interrupted sweep; a
    resume sets them running again). Returns how many."""
    client = MlflowClient(uri)
    running = [r.info.run_id for r in trial_runs(uri, experiment_id, parent_run_id).values()
               if r.info.status == RunStatus.to_string(RunStatus.RUNNING)]
    for run_id in running:
        retry(lambda run_id=run_id: client.set_terminated(run_id, "KILLED"))
    return len(running)


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
    # the driver's stamps of the shards it verified (vidgan.shards.trust): trials do not hash them again
    verified_shards: tuple[str, ...] = field(default=(), repr=False)


class TrialLogger:
    """Where a trial's results go, with one :meth:`report` per evaluation: its nested MLflow run (params,
    metrics, sample videos, FVD curve) and its Prometheus gauges.

    Nothing here waits for MLflow: what the run gets is written to the trial's durable spool
    (:mod:`tune_jobs.spool`) and delivered by a background thread, so a trial trains on through a tracking
    outage of any length. The records of an evaluation become deliverable once the checkpoint that carries
    them has been reported (:meth:`checkpointed`, then :meth:`committed`); a trial restored from its checkpoint
    (on another node, or by ``vidgan sweep --resume``) delivers what its run is missing from it.

    Opening it finds or creates the trial's run (a restarted trial continues its own run) and refuses to
    restart a trial that diverged before (when MLflow answers at that moment).
    """

    def __init__(self, ctx: SweepContext, trial: Trial, trial_id: str, folder: str | os.PathLike | None = None,
                 checkpoint: str | os.PathLike | None = None) -> None:
        """``folder``: where the spool lives (default: a new temporary folder); ``checkpoint``: a Tune checkpoint
        folder of this trial to resume the spool from (its ``tracking/``)."""
        import tempfile

        from tune_jobs.metrics import TrialMetrics
        from tune_jobs.spool import Delivery, Spool, fast_http

        self.ctx, self.trial, self.trial_id = ctx, trial, trial_id
        os.environ.update(ctx.auth_env)  # MLflow reads them from the environment at each request
        fast_http()  # the delivery thread retries for as long as it takes: no request blocks in MLflow's backoff
        folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="vidgan-spool-"))
        source = Path(checkpoint) / SPOOL_DIR if checkpoint is not None else None
        self.spool = Spool.restore(source, folder / SPOOL_DIR)
        state = self.spool.read_state()
        if state.get("trial_id") not in (None, trial_id):  # not this trial's records (a PBT exploit's donor's)
            self.spool = Spool.restore(None, folder / SPOOL_DIR)
            state = {}
        self.client = MlflowClient(ctx.tracking_uri)
        self.created = False

        def open_run() -> str:
            run_id, self.created = find_or_create_trial_run(
                ctx.tracking_uri, ctx.experiment_id, ctx.parent_run_id, trial_id,
                run_name=f"{trial.run_name}-{trial_id}",
                tags={TAG_SWEEP: ctx.sweep, TAG_VARIANT: trial.variant_name, TAG_DATASET: trial.dataset.name},
            )
            return run_id

        self.delivery = Delivery(self.spool, self.client, open_run, what=f"trial {trial_id}")
        previous: dict[str, str] = {}
        metrics: dict[str, float] = {}
        try:  # at once when MLflow answers; else the delivery thread opens the run when it does
            self.delivery.run_id = open_run()
            run = self.client.get_run(self.delivery.run_id)
            previous, metrics = run.data.tags, run.data.metrics
        except Exception as exc:  # noqa: BLE001 - MLflow away: train on, deliver later
            self.delivery.outage.failed(exc)
        if previous.get(TAG_END) == "diverged":  # a restart of a diverged trial: fail again at once
            raise RuntimeError(f"trial {trial_id} diverged earlier: {previous.get(TAG_REASON)}")
        if previous.get(TAG_END) == "failed":  # a restart after a failure (e.g. out of memory): running again
            self._append(tags={TAG_END: "restarted",
                               TAG_REASON: f"an earlier attempt failed: {previous.get(TAG_REASON, '')}"[:5000]})
        spec = ctx.spec
        self._append(params=flatten(
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
        ))
        self.gauges = TrialMetrics(ctx.sweep, trial_id, trial.variant_name)
        # Result keys that cannot change in this trial: a loss term its variant lacks is 0 at every step, and
        # the hp_* hyperparameters change only under PBT (else they are the params train.* and loss.*).
        variant = trial.variant
        self.constant_keys = {"drift"} if not variant.has_drift else set()
        if not variant.has_penalty:
            self.constant_keys |= {"penalty", "grad_norm"}
        self.hp_vary = spec.scheduler.type == "pbt"
        # best score so far of each ranked key (fvd, the sweep's metric, a smoothed fvd): (value, iteration), from
        # the checkpoint's spool state, else from what the run logged before
        if state.get("best"):
            self.best = {k: (float(v), int(i)) for k, (v, i) in state["best"].items()}
        else:
            self.best = {k[len("best_") : -len("_iteration")]: (metrics[k[: -len("_iteration")]], int(v))
                         for k, v in metrics.items() if k.startswith("best_") and k.endswith("_iteration")
                         and k[: -len("_iteration")] in metrics}
        if self.created or not self.spool.last_seq:
            self._append(tags={TAG_NOTE: self._description("running", 0)[:50000]})
        from tune_jobs.report import format_params

        self._append(tags={TAG_PARAMS: format_params(trial.params)})  # (again after a PBT exploit: new values)
        self.spool.commit()  # parameters and the first description are the same whenever they are recomputed
        path, name = trial.dataset.path, trial.dataset.name

        def log_input(client: MlflowClient, run_id: str) -> None:
            try:
                client.log_inputs(run_id, datasets=[dataset_input(path, name)])
            except (OSError, ValueError) as exc:  # lineage is worth a warning, not a failed trial
                import logging

                logging.getLogger(__name__).warning("dataset %s not logged as an MLflow input: %s", name, exc)

        self.system: Any = None
        self.delivery.urgent(log_input)
        self.delivery.urgent(self._start_system_metrics)
        self.delivery.start()

    @property
    def run_id(self) -> str:
        """The trial's MLflow run ('' while MLflow has not answered since the trial started)."""
        return self.delivery.run_id or ""

    def _start_system_metrics(self, client: Any = None, run_id: str | None = None) -> None:
        """(Re)start MLflow's system metrics monitor (it stops for good at its first failed request, e.g. in a
        tracking outage). Runs in the delivery thread, when MLflow answers: its first request waits for MLflow."""
        process = getattr(self.system, "_process", None)
        if run_id is None or (process is not None and process.is_alive()):
            return
        self.system = start_system_metrics(self.ctx.tracking_uri, run_id, resume=True)

    def _watch_system_metrics(self) -> None:
        process = getattr(self.system, "_process", None)
        if process is None or not process.is_alive():
            self.delivery.urgent(self._start_system_metrics)

    def _append(self, op: str = "batch", **fields: Any) -> None:
        self.spool.append(op, **fields)

    def _description(self, ended: str, iteration: int) -> str:
        from tune_jobs.report import format_params, trial_description

        best, at = self.best.get("fvd", (float("nan"), None))
        params = format_params(self.trial.params)
        from tune_jobs.restarts import restart_sentence

        text = trial_description(self.trial.variant_name, self.trial.dataset.name, self.trial.seed, ended, iteration,
                                 best, at, params=params)
        restarts = getattr(self, "restarts", [])
        text += f"\n\n{restart_sentence(restarts)}" if restarts else ""
        version = getattr(self, "glance_version", None)
        return with_glance(text, self.run_id, version) if version and self.run_id else text

    def ranked_keys(self, result: dict[str, float]) -> list[str]:
        """The scores whose best so far each evaluation logs as ``best_<key>`` and ``best_<key>_iteration``: FVD, the
        sweep's metric, and the smoothed scores the schedulers read where the result has them (``*_smooth``)."""
        keys = ["fvd", self.ctx.spec.eval.metric, *(k for k in result if k.endswith("_smooth"))]
        return [k for i, k in enumerate(keys) if k in result and k not in keys[:i]]

    def mlflow_metrics(self, result: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
        """(metrics, params) of one Tune result under their MLflow names (:data:`MLFLOW_METRIC_NAMES`): constants
        of the trial go to params, the step and non-numbers nowhere, and ``best_<key>``/``best_<key>_iteration``
        are added for each of :meth:`ranked_keys`."""
        step = int(result[STEP_KEY])
        metrics: dict[str, float] = {}
        params: dict[str, float] = {}
        for key, value in result.items():
            if key == STEP_KEY or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            name = MLFLOW_METRIC_NAMES.get(key, key)
            if key in PARAM_KEYS or key in self.constant_keys:
                params[name] = value
            elif key.startswith("hp_") and not self.hp_vary:
                continue
            elif key == "gpu_memory_bytes" and not value:
                continue  # a CPU trial
            else:
                metrics[name] = value
        for key in self.ranked_keys(result):
            value = float(result[key])
            if value == value and (key not in self.best or value < self.best[key][0]):
                self.best[key] = (value, step)
            if key in self.best:
                metrics[f"best_{key}"], metrics[f"best_{key}_iteration"] = self.best[key][0], self.best[key][1]
        metrics.update({f"{SCORES_SECTION}/{k}": metrics[k] for k in SCORE_KEYS if k in metrics})
        return metrics, params

    def report(
        self, result: dict[str, float], history: list[dict[str, float]], samples: np.ndarray | None, folder: Path
    ) -> None:
        """Spool one evaluation at step ``result["iteration"]``: metrics under their MLflow names with the best
        scores so far (:meth:`mlflow_metrics`), gauges, the samples (uint8 clips [N, T, H, W, 3]) as an image strip
        by step (key ``samples``) and as a 4x enlarged GIF and MP4 grid, the curve of the sweep's metric so far, and
        the run's description. ``folder`` is a scratch folder. Delivered after :meth:`committed`."""
        from tune_jobs.report import curve_figure

        step = int(result[STEP_KEY])
        self.gauges.record(**{k: result[k] for k in self.gauges.KEYS if k in result})
        metrics, params = self.mlflow_metrics(result)
        now = int(time.time() * 1000)
        self._append(metrics=[[k, float(v), now, step] for k, v in metrics.items() if v is not None],
                     params={k: str(v) for k, v in params.items()})
        if samples is not None and len(samples):
            from PIL import Image

            from vidgan.video import enlarge, strip, tile, write_video

            png = folder / f"samples_{step:07d}.png"
            Image.fromarray(strip(samples)).save(png)
            self._append("image", file=self.spool.add_file(png), key=SAMPLES_KEY, step=step, timestamp=now)
            small = folder / f"latest_{step:07d}.png"
            Image.fromarray(glance(samples)).save(small)
            self._append("artifact", file=self.spool.add_file(small), artifact_path="samples", name="latest.png")
            self.glance_version = f"{step}-{now}"
            grid = enlarge(tile(samples))
            for suffix in (".gif", ".mp4"):
                video = write_video(grid, folder / f"samples_{step:07d}{suffix}")
                self._append("artifact", file=self.spool.add_file(video), artifact_path="samples")
        metric = self.ctx.spec.eval.metric
        curve = [(int(h["iteration"]), float(h[metric])) for h in history if metric in h]
        figure = folder / f"{metric}_curve.png"
        curve_figure({self.trial.run_name: curve}, metric).savefig(figure)
        self._append("artifact", file=self.spool.add_file(figure, f"{metric}_curve_{step:07d}.png"),
                     artifact_path=None, name=f"{metric}_curve.png")
        self._append(tags={TAG_NOTE: self._description("running", step)[:50000]})
        self.spool.write_state({"trial_id": self.trial_id, "best": {k: list(v) for k, v in self.best.items()}})
        self._watch_system_metrics()

    def checkpointed(self, checkpoint: Path) -> int:
        """Put the spool into a checkpoint folder (its ``tracking/``); returns the last record it holds, for
        :meth:`committed` once the checkpoint has been reported."""
        self.spool.export(checkpoint / SPOOL_DIR, self.delivery.delivered)
        return self.spool.last_seq

    def committed(self, seq: int) -> None:
        """The checkpoint holding the records up to ``seq`` was reported: deliver them."""
        self.spool.commit(seq)
        self.delivery.wake()

    def backlog(self) -> int:
        """Records committed and not yet delivered (MLflow away, or slow)."""
        return self.delivery.backlog()

    def restored(self, owner: str | None, iteration: int) -> None:
        """Note where a restored checkpoint came from: another trial's means PBT cloned that trial into this one."""
        if owner is None or owner == self.trial_id:
            return
        exploits = [*self.spool.read_state().get("exploits", []), f"{owner}@{iteration}"]
        self.spool.write_state({**self.spool.read_state(), "trial_id": self.trial_id, "exploits": exploits})
        self._append(tags={TAG_CLONED_FROM: owner, TAG_CLONED_AT: str(iteration),
                           TAG_EXPLOITS: ",".join(exploits)[-5000:]})

    def restarted(self, restarts: list[dict[str, Any]], node_id: str) -> None:
        """Put the trial's restarts (:mod:`tune_jobs.restarts`) on its run: tags with the count, each restart's
        iteration and cause, and the description; the latest resumed here, on ``node_id``."""
        from tune_jobs.restarts import restart_tags

        if not restarts:
            return
        restarts = [*restarts[:-1], {**restarts[-1], "node": restarts[-1].get("node") or node_id}]
        self.restarts = restarts
        self._append(tags=restart_tags(restarts))
        self.spool.commit()  # the same whenever recomputed

    def completed(self) -> None:
        self._append(tags={TAG_END: "completed"})

    def stop_system_metrics(self) -> None:
        """Stop the system metrics monitor (it logs what it sampled last, unless MLflow is away)."""
        if self.system is not None:
            if self.delivery.outage.down_since is None:
                self.system.finish()
            else:
                self.system._shutdown_event.set()  # its last request would wait for MLflow
            self.system = None

    def failed(self, exc: Exception) -> None:
        """Mark the run FAILED with the reason: ``diverged`` for a non-finite loss (a restart of this trial
        then fails at once), ``failed`` otherwise (e.g. out of GPU memory within the trial's share). Waits a
        little for the delivery (the driver's reconciliation delivers from the checkpoint what it leaves)."""
        from vidgan.trainer import TrainingDiverged

        self.stop_system_metrics()
        end = "diverged" if isinstance(exc, TrainingDiverged) else "failed"
        self._append(tags={TAG_END: end, TAG_REASON: str(exc)})
        self._append("status", status="FAILED")
        self.spool.commit()
        self.delivery.flush(FLUSH_S)

    def finish(self, timeout_s: float | None = None) -> bool:
        """Deliver everything spooled (waiting up to ``timeout_s``, default :data:`FLUSH_S`) and end the run
        FINISHED; True when all of it went out."""
        self.stop_system_metrics()
        self._append("status", status="FINISHED")
        self.spool.commit()
        done = self.delivery.flush(FLUSH_S if timeout_s is None else timeout_s)
        self.delivery.stop()
        return done


#: the spool's folder inside a trial's folder and inside its Tune checkpoints
SPOOL_DIR = "tracking"
#: how long a trial that ends waits for its spool to reach MLflow (the rest is delivered from its checkpoint)
FLUSH_S = 30.0
