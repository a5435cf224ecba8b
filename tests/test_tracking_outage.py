"""A tracking outage in the middle of a sweep, against a real ``mlflow server`` process (SQLite store) reached
through a cable the test unplugs and plugs back (tests/mlflow_server.py), on a real local Ray (2 CPUs) with two
trials. The outage lasts at least twice MLflow's retry budget and until each trial has made a whole evaluation
while the store is down (watched in Tune's progress files, not guessed from a number of seconds): no trial fails
or stalls, the sweep log says once that MLflow went away and once that it is back, and afterwards every trial's
run holds exactly what its trial computed (each step once, the values Tune received: what an undisturbed run
logs, without running the sweep twice).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow_server import Cable, Server

from tune_jobs import tracking
from tune_jobs.spec import parse_spec
from tune_jobs.sweep import run_sweep

pytestmark = pytest.mark.slow

#: MLflow's own retry budget in this module: 2 retries, back-off factor 1 s (MLflow reads whole seconds), no jitter:
#: 0 + 2 = 2 s per request (urllib3's Retry.get_backoff_time); the outage lasts at least twice that, 4 s, and until
#: each trial has evaluated while it is down, while the trials train on
BUDGET_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
BUDGET_S = 2.0
#: a deadline only a real hang reaches (a wait ends at its event, never at this)
HANG_S = 900
MAX_T = 12


@pytest.fixture(scope="module")
def budget():
    """MLflow's shortened retry budget for the driver and the trials (Ray's workers inherit the environment)."""
    saved = {k: os.environ.get(k) for k in BUDGET_ENV}
    os.environ.update(BUDGET_ENV)
    yield BUDGET_S
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def server(tmp_path_factory, budget):
    """The real server, reached through a cable the test unplugs (tests/mlflow_server.py)."""
    s = Server(tmp_path_factory.mktemp("mlflow-server"))
    s.start()
    cable = Cable(s.port)
    yield cable
    cable.unplug()
    s.stop()


@pytest.fixture(scope="module")
def ray_local(budget):
    """A real local Ray (2 CPUs) in a private temp folder, started after the budget is set (workers inherit it)."""
    import shutil
    import tempfile

    import ray

    if ray.is_initialized():
        ray.shutdown()
    temp = tempfile.mkdtemp(prefix="vgo-", dir="/tmp")  # short: Ray's socket paths must fit
    for attempt in range(3):  # a raylet gets 30 s to register: on a loaded 2-core machine it may take longer
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield ray
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory, budget, ray_local):
    from vidgan.ingest import ingest_sample

    root = tmp_path_factory.mktemp("outage")
    ingest_sample(root / "data", frames=16, size=32, stride=8)
    return root


def _spec(root: Path, uri: str, name: str, **changes) -> dict:
    spec = {
        "name": name,
        "datasets": [{"name": "sample", "path": str(root / "data")}],
        "model": {"frames": 16, "size": 32, "width": 4, "z_dim": 8},
        # no moving average: one I3D pass per evaluation (what an evaluation logs is the ASHA sweep's question)
        "train": {"batch_size": 4, "n_critic": 2, "ema": False},
        "variants": ["gp", "sn"],
        "eval": {"every": 2, "n_real": 8, "n_fake": 4, "frames": 9, "batch_size": 4, "grid": 4, "generator": "raw"},
        "scheduler": {"type": "fifo", "max_t": MAX_T, "grace_period": 2},
        "resources": {"cpu": 1, "data_cpu": 0, "threads": 1},
        "max_failures": 2,
        "mlflow": {"tracking_uri": uri, "experiment": "faults"},
        "storage_path": str(root / "results"),
    }
    spec.update(changes)
    return spec


def _runs(uri: str, parent: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("faults")
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")


def _fvd_steps(uri: str) -> int:
    """Most `fvd` steps any run of the experiment holds now (0 while there is none or the server is down)."""
    try:
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("faults")
        runs = client.search_runs([exp.experiment_id], filter_string="tags.`vidgan.kind` = 'trial'") if exp else []
        return max((len(client.get_metric_history(r.info.run_id, "fvd")) for r in runs), default=0)
    except Exception:  # noqa: BLE001 - not there yet
        return 0


def _mlflow_equals_tune(uri: str, outcome, results_by_trial: dict) -> None:
    """Every trial run holds exactly what Tune received from its trial: each evaluation step once, same values."""
    client = MlflowClient(uri)
    runs = {r.data.tags[tracking.TAG_TRIAL]: r for r in _runs(uri, outcome.parent_run_id)}
    assert sorted(runs) == sorted(results_by_trial)  # one run per trial
    for trial_id, df in results_by_trial.items():
        run_id = runs[trial_id].info.run_id
        df = df.drop_duplicates("iteration", keep="last")
        for key, name in (("fvd", "fvd"), ("kvd", "kvd"), ("fvd_raw", "fvd_raw"), ("critic_loss", "loss/critic"),
                          ("clips_per_s", "throughput/clips_per_s")):
            history = client.get_metric_history(run_id, name)
            assert sorted(m.step for m in history) == sorted(int(i) for i in df["iteration"]), (trial_id, name)
            assert {m.step: m.value for m in history} == pytest.approx(
                {int(i): float(v) for i, v in zip(df["iteration"], df[key], strict=True)}, rel=1e-9), (trial_id, name)
        images = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")
                  and "+compressed" not in a.path]
        assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in images) == sorted(int(i) for i in
                                                                                         df["iteration"])
        videos = {a.path for a in client.list_artifacts(run_id, "samples")}
        assert {f"samples/samples_{int(i):07d}.gif" for i in df["iteration"]} <= videos


def _progress(results: Path) -> dict[str, list[dict[str, str]]]:
    """Each started trial's results so far as Tune wrote them (its progress.csv), read while the sweep runs: trial
    folder -> rows (a last line Tune is still writing is left out)."""
    import csv

    out = {}
    for path in results.glob("train_trial_*/progress.csv"):
        try:
            text = path.read_text()
        except OSError:
            continue
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines = lines[:-1]
        out[path.parent.name] = list(csv.DictReader(lines))
    return out


def _evaluated_since(rows: list, down: float) -> int:
    """How many whole evaluations of a trial came after ``down``: results whose previous result was already
    reported after ``down`` (a trial logs an evaluation, then reports it: the logging of such a result came after
    ``down``). Tune's timestamps are whole seconds (int(time.time()) at the report): ``t > down`` means reported
    after ``down``. Counted on the rows read before the store comes back, they happened while it was down."""
    stamps = [int(r["timestamp"]) for r in rows]
    return sum(prev > down for prev in stamps[:-1])


def test_tracking_outage_loses_nothing_and_stalls_nothing(data: Path, server: Cable, budget: float,
                                                           caplog) -> None:
    spec = parse_spec(_spec(data, server.uri, "outage"))
    results = data / "results" / "outage"
    seen: dict[str, float] = {}
    during: dict[str, int] = {}  # trial folder -> whole evaluations seen while MLflow was down (read before the plug)
    sweep_over = threading.Event()

    def outage() -> None:
        """Once a trial's first evaluation has reached MLflow, MLflow goes away until each of the two trials has
        made a whole evaluation while it is down, and for twice its retry budget at least; then it comes back.
        It comes back early only when a trial has reached its last iteration (the sweep's end must find MLflow up)
        or at a hang's deadline: the assertions below then fail."""
        deadline = time.monotonic() + HANG_S
        while _fvd_steps(server.uri) < 1:
            if sweep_over.is_set() or time.monotonic() > deadline:
                return
            time.sleep(0.5)
        seen["down"] = time.time()
        down_at = time.monotonic()
        server.unplug()
        try:
            while True:
                progress = _progress(results)
                during.update({folder: _evaluated_since(rows, seen["down"]) for folder, rows in progress.items()})
                each = len(during) == 2 and min(during.values()) >= 1
                if each and time.monotonic() - down_at >= 2 * budget:
                    break
                ended = any(rows and int(rows[-1]["iteration"]) >= MAX_T for rows in progress.values())
                if ended or sweep_over.is_set() or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            server.plug()
            seen["up"] = time.time()

    killer = threading.Thread(target=outage, daemon=True)
    killer.start()
    with caplog.at_level(logging.WARNING, logger="tune_jobs.sweep"):
        try:
            outcome = run_sweep(spec, name="outage", verbose=0)
        finally:
            sweep_over.set()
    killer.join(timeout=HANG_S)
    assert "up" in seen, "the outage never happened"
    print(f"MLflow down for {seen['up'] - seen['down']:.0f} s; whole evaluations while down: {during}")
    assert seen["up"] - seen["down"] >= 2 * budget
    assert sorted(r.status for r in outcome.rows) == ["completed", "completed"]
    assert all(r.restarts == 0 for r in outcome.rows)  # no trial failed

    # the trials went on training during the outage: each made a whole evaluation while MLflow was down (an event:
    # a trial that waited for MLflow could make none, the outage would last until the hang deadline, and this fails;
    # no wall-clock comparison, which a busy machine could fail)
    import pandas as pd

    frames = {}  # each trial's results as Tune saved them (progress.csv): trial id -> rows
    for folder in results.glob("train_trial_*"):
        parts = folder.name.split("_")
        frames[f"{parts[2]}_{parts[3]}"] = pd.read_csv(folder / "progress.csv")
    assert len(frames) == 2
    assert len(during) == 2 and min(during.values()) >= 1, ("a trial made no evaluation while MLflow was down",
                                                            during)

    _mlflow_equals_tune(server.uri, outcome, frames)
    lines = [r.getMessage() for r in caplog.records if r.name == "tune_jobs.sweep"]
    assert sum("MLflow is unreachable" in m for m in lines) == 1, lines
    assert sum("MLflow is back" in m for m in lines) == 1, lines

