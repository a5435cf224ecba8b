"""A sweep read back from MLflow alone: its parent run, its trials as table rows, its spec and sample strips.

What ``vidgan report`` rebuilds the comparison from, for a sweep that finished, was interrupted or is still
running. A trial's row takes the same values the end of a sweep takes from Tune's results (see
``tune_jobs.sweep._rows``), from what :class:`~tune_jobs.tracking.TrialLogger` logged at each evaluation:
the ``fvd`` history (best, final, the curve; the iteration of the last evaluation; per step the value logged
last, see :func:`per_step`), ``fvd_raw``, the interval
of the best evaluation, the last ``kvd`` and update counts, and the tags of how it ended. A trial that has
not ended (no ``vidgan.end`` tag, run not FAILED) is ``unfinished``: MLflow cannot tell a running trial from
one whose sweep was killed, or from one ASHA stopped before its sweep reached its end.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import ViewType

from tune_jobs import report, tracking

#: a run id as MLflow makes them (32 hex digits)
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class SweepNotFound(LookupError):
    """No sweep in the store answers to the name or run id given."""


@dataclass
class SweepRecord:
    """One sweep as MLflow holds it."""

    name: str
    run_id: str
    experiment_id: str
    status: str  # the parent run's: RUNNING (running or interrupted), FINISHED, FAILED, KILLED
    start_time: int  # ms since the epoch
    params: dict[str, str]
    tags: dict[str, str]
    rows: list[report.TrialRow]
    spec: dict[str, Any] = field(default_factory=dict)  # the parent's spec.yaml (the effective spec)
    datasets: dict[str, str] = field(default_factory=dict)  # dataset name -> digest of its manifest

    @property
    def n_seeds(self) -> int:
        return len([s for s in self.params.get("seeds", "").split(",") if s.strip()]) or 1

    @property
    def metric(self) -> str:
        return self.params.get("metric", "fvd")

    def comparison(self) -> report.Comparison:
        return report.Comparison(self.rows, n_seeds=self.n_seeds)

    def setting(self, key: str) -> str:
        """A setting FVDs are only comparable under: ``n_real``, ``n_fake``, ``frames`` (of the evaluation)."""
        if key == "frames":
            frames = self.spec.get("eval", {}).get("frames")
            return str(frames) if frames is not None else "16"  # EvalSpec's default
        return self.params.get(key, "?")


def _latest_value(history: list[Any]) -> float:
    return float(max(history, key=lambda m: (m.step, m.timestamp)).value) if history else math.nan


def finite(value: float) -> bool:
    """Whether a logged value is a number: not NaN, not infinite, and not the largest float, which is how MLflow's
    SQL stores keep an infinite value."""
    return math.isfinite(value) and abs(value) < sys.float_info.max


def per_step(history: list[Any]) -> list[Any]:
    """One value per step, the one logged last, by step: a trial restored from an earlier checkpoint evaluates a
    step again, and its first evaluation belongs to the branch the restore dropped."""
    latest: dict[int, Any] = {}
    for m in sorted(history, key=lambda m: (m.step, m.timestamp)):
        latest[m.step] = m
    return [latest[k] for k in sorted(latest)]


def trial_row(client: MlflowClient, run: Any) -> report.TrialRow:
    """The table row of a trial run (see the module's docstring)."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    end = tags.get(tracking.TAG_END)
    if end in report.TRIAL_ENDS:
        status = end
    elif run.info.status == "FAILED":
        status = "failed"
    else:
        status = report.UNFINISHED
    row = report.TrialRow(
        trial_id=tags.get(tracking.TAG_TRIAL, run.info.run_id),
        variant=tags.get(tracking.TAG_VARIANT, params.get("variant", "?")),
        dataset=tags.get(tracking.TAG_DATASET, params.get("dataset", "?")),
        seed=report.parse_seed(params.get("seed", "0")),
        status=status,
        params=tags.get(tracking.TAG_PARAMS, ""),
        reason=tags.get(tracking.TAG_REASON, "") if status in ("failed", "diverged") else "",
    )
    from tune_jobs.restarts import TAG_RESTART_LOG, TAG_RESTARTS, parse_restart_log

    row.restart_causes = parse_restart_log(tags.get(TAG_RESTART_LOG, ""))
    row.restarts = int(tags[TAG_RESTARTS]) if tags.get(TAG_RESTARTS, "").isdigit() else 0
    fvd = [m for m in per_step(client.get_metric_history(run.info.run_id, "fvd")) if finite(m.value)]
    if not fvd:
        return row
    row.curve = [(int(m.step), float(m.value)) for m in fvd]
    best = min(fvd, key=lambda m: m.value)  # the first of equal values, as pandas' idxmin
    row.best_fvd, row.final_fvd = float(best.value), float(fvd[-1].value)
    raw = [m for m in per_step(client.get_metric_history(run.info.run_id, "fvd_raw")) if finite(m.value)]
    if raw:
        row.best_fvd_raw = float(min(m.value for m in raw))
    for key, attr in (("fvd_ci_low", "best_fvd_ci_low"), ("fvd_ci_high", "best_fvd_ci_high")):
        at_best = [m for m in client.get_metric_history(run.info.run_id, key) if m.step == best.step]
        if at_best:
            setattr(row, attr, _latest_value(at_best))
    row.iterations = int(fvd[-1].step)
    row.final_kvd = float(metrics.get("kvd", math.nan))
    row.kvd_stderr = float(metrics.get(tracking.MLFLOW_METRIC_NAMES["kvd_stderr"], math.nan))
    row.critic_updates = int(metrics.get(tracking.MLFLOW_METRIC_NAMES["critic_updates"], 0))
    row.paper_steps = int(metrics.get(tracking.MLFLOW_METRIC_NAMES["paper_steps"], 0))
    return row


def _experiments(client: MlflowClient) -> list[str]:
    return [e.experiment_id for e in tracking.retry(lambda: client.search_experiments(view_type=ViewType.ACTIVE_ONLY))]


def find_parent(client: MlflowClient, ref: str) -> Any:
    """The parent run of a sweep: ``latest`` (the sweep started last, in any experiment), a sweep's name (its
    latest run of that name) or a parent run's id. SweepNotFound otherwise."""
    if RUN_ID.match(ref):
        try:
            run = client.get_run(ref)
        except Exception:  # noqa: BLE001 - MLflow raises its own "not found" types per store
            run = None
        if run is not None:
            if run.data.tags.get(tracking.TAG_KIND) != "sweep":
                raise SweepNotFound(f"run {ref} is not a sweep's parent run (tag {tracking.TAG_KIND} is "
                                    f"{run.data.tags.get(tracking.TAG_KIND)!r})")
            return run
    kind = f"tags.`{tracking.TAG_KIND}` = 'sweep'"
    where = kind if ref == "latest" else f"{kind} and tags.`{tracking.TAG_SWEEP}` = '{ref.replace(chr(39), '')}'"
    experiments = _experiments(client)
    found = tracking.retry(lambda: client.search_runs(experiments, where, order_by=["attributes.start_time DESC"],
                                                      max_results=1)) if experiments else []
    if not found:
        what = "no sweep" if ref == "latest" else f"no sweep named or with run id {ref!r}"
        raise SweepNotFound(f"{what} in MLflow store {client.tracking_uri}")
    return found[0]


def spec_yaml(client: MlflowClient, run_id: str, folder: Path) -> dict[str, Any]:
    """The parent run's ``spec.yaml`` (the effective spec), or {} where it has none."""
    import yaml

    try:
        path = client.download_artifacts(run_id, "spec.yaml", str(folder))
        data = yaml.safe_load(Path(path).read_text())
    except Exception:  # noqa: BLE001 - an older or damaged run: the report says less, not nothing
        return {}
    return data if isinstance(data, dict) else {}


def read_sweep(uri: str, ref: str, folder: Path) -> SweepRecord:
    """The sweep ``ref`` (see :func:`find_parent`) of the store at ``uri``; downloads go to ``folder``."""
    client = MlflowClient(uri)
    parent = find_parent(client, ref)
    info = parent.info
    runs = tracking.retry(lambda: client.search_runs(
        [info.experiment_id], f"tags.`{tracking.TAG_PARENT}` = '{info.run_id}'", max_results=5000))
    rows = [trial_row(client, r) for r in runs if r.data.tags.get(tracking.TAG_KIND) == "trial"]
    datasets = {i.dataset.name: i.dataset.digest for i in (parent.inputs.dataset_inputs if parent.inputs else [])}
    return SweepRecord(
        name=parent.data.tags.get(tracking.TAG_SWEEP, info.run_name), run_id=info.run_id,
        experiment_id=info.experiment_id, status=info.status, start_time=info.start_time,
        params=dict(parent.data.params), tags=dict(parent.data.tags), rows=rows,
        spec=spec_yaml(client, info.run_id, folder), datasets=datasets,
    )


def sample_images(client: MlflowClient, run_id: str, key: str = tracking.SAMPLES_KEY) -> dict[int, str]:
    """The PNGs a run logged under the image key ``key`` (``MlflowClient.log_image``): step -> artifact path of the one
    logged last at that step."""
    prefix = key.replace("/", "~")  # how MLflow writes a key with slashes into a file name
    found: dict[int, tuple[int, str]] = {}
    for item in tracking.retry(lambda: client.list_artifacts(run_id, "images")):
        name = item.path.rsplit("/", 1)[-1]
        parts = name.split("+")  # <key>+step+<step>+timestamp+<ms>+<uuid>.png (+compressed.webp)
        if (len(parts) == 6 and parts[0] == prefix and parts[1] == "step" and name.endswith(".png")
                and parts[2].isdigit() and parts[4].isdigit()):
            step, stamp = int(parts[2]), int(parts[4])
            if step not in found or (stamp, item.path) > found[step]:
                found[step] = (stamp, item.path)
    return {step: path for step, (_, path) in sorted(found.items())}


def sample_strips(
    uri: str, rows: list[report.TrialRow], run_ids: dict[str, str], folder: Path
) -> dict[str, tuple[int, Path]]:
    """Each trial's latest sample strip (the image ``samples`` of its last evaluation), downloaded into
    ``folder``: trial id -> (its iteration, the PNG). Trials without one are left out."""
    client = MlflowClient(uri)
    out: dict[str, tuple[int, Path]] = {}
    for row in rows:
        run_id = run_ids.get(row.trial_id)
        if run_id is None:
            continue
        images = sample_images(client, run_id)
        if images:
            step, path = max(images.items())
            target = folder / row.trial_id
            target.mkdir(parents=True, exist_ok=True)
            out[row.trial_id] = (step, Path(client.download_artifacts(run_id, path, str(target))))
    return out


def trial_run_ids(uri: str, record: SweepRecord) -> dict[str, str]:
    """Trial id -> MLflow run id of a sweep's trials."""
    return {k: r.info.run_id for k, r in tracking.trial_runs(uri, record.experiment_id, record.run_id).items() if k}
