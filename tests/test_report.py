"""`vidgan report` on a real SQLite MLflow store, without Ray: the state a sweep killed halfway leaves (its parent
and some trial runs still RUNNING, partial histories), written through the sweep's own code (log_sweep_start,
TrialLogger), read back into the same table a sweep prints; its files (Markdown, CSV, a self-contained HTML page);
and two sweeps side by side with the evaluation setting that makes their FVDs incomparable marked.
(`tests/test_sweep_e2e.py` checks the table against the one real sweeps printed, finished and killed.)
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from empty_store import empty_store

from tune_jobs import report, tracking
from tune_jobs.main import main
from tune_jobs.spec import parse_spec
from vidgan.trainer import TrainingDiverged


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vidgan.ingest import ingest_sample

    root = tmp_path_factory.mktemp("report-data")
    ingest_sample(root / "data", frames=16, size=32, stride=8)
    return root / "data"


def _spec(data: Path, root: Path, name: str, n_fake: int):
    return parse_spec({
        "name": name,
        "datasets": [{"name": "sample", "path": str(data)}],
        "model": {"frames": 16, "size": 32, "width": 4, "z_dim": 8},
        "train": {"batch_size": 4, "n_critic": 2},
        "variants": ["gp", "sn"],
        "seeds": [0, 1],
        "eval": {"every": 2, "n_real": 8, "n_fake": n_fake, "frames": 9, "batch_size": 4, "grid": 4},
        "scheduler": {"type": "asha", "max_t": 6, "grace_period": 2, "reduction_factor": 3},
        "resources": {"cpu": 1, "data_cpu": 0, "threads": 1},
        "mlflow": {"tracking_uri": f"sqlite:///{root}/mlflow.db", "experiment": "report"},
    })


def _result(step: int, fvd: float, n_fake: int) -> dict[str, float]:
    return {
        "critic_loss": 1.0, "wasserstein": 0.5, "penalty": 0.1, "drift": 0.0, "grad_norm": 1.0, "generator_loss": -0.2,
        "fvd": fvd, "fvd_raw": fvd + 7.0, "fvd_ci_low": fvd - 3.0, "fvd_ci_high": fvd + 4.0, "kvd": fvd / 100,
        "kvd_stderr": 0.01 * step, "n_fake": n_fake, "n_real": 8, "iteration": step, "critic_updates": 2 * step,
        "generator_updates": step, "paper_steps": 3 * step, "gpu_memory_bytes": 0.0, "fvd_smooth": fvd,
    }


#: (variant, seed) -> FVDs at iterations 2, 4, ... and how the trial is left: gp seed 0 ran to max_t (6), two
#: trials were cut off mid-way (their runs stay RUNNING), sn seed 1 diverged before its first evaluation
PLAN = {("gp", 0): ([40.0, 25.0, 30.0], "completed"), ("gp", 1): ([38.0, 27.0], "cut"),
        ("sn", 0): ([35.0], "cut"), ("sn", 1): ([], "diverged")}


def _killed_sweep(data: Path, root: Path, name: str, n_fake: int, tmp: Path) -> str:
    """What a sweep killed halfway leaves in MLflow, written by the sweep's own code; the parent run's id."""
    from tune_jobs.sweep import log_sweep_start

    spec = _spec(data, root, name, n_fake)
    uri = tracking.resolve_tracking_uri(spec.mlflow.tracking_uri)
    exp = tracking.ensure_experiment(uri, spec.mlflow.experiment)
    parent = tracking.start_parent_run(uri, exp, name, tags={"vidgan.overrides": f"eval.n_fake={n_fake}"})
    log_sweep_start(tracking.Tracker(uri, parent), spec, name)
    ctx = tracking.SweepContext(spec=spec, sweep=name, tracking_uri=uri, experiment_id=exp, parent_run_id=parent)
    for i, ((variant, seed), (fvds, end)) in enumerate(PLAN.items()):
        logger = tracking.TrialLogger(ctx, spec.trial({"variant": variant, "dataset": "sample", "seed": seed}), f"t{i}")
        history: list[dict[str, float]] = []
        for j, fvd in enumerate(fvds):
            result = _result(2 * (j + 1), fvd, n_fake)
            history.append(result)
            samples = np.full((4, 16, 32, 32, 3), 40 * i, dtype=np.uint8) if j == len(fvds) - 1 else None
            logger.report(result, history, samples, tmp)
        if end == "completed":
            logger.completed()
            logger.finish()
        elif end == "diverged":
            logger.failed(TrainingDiverged(1, {"critic_loss": math.nan}))
        else:  # killed after its evaluations reached MLflow: the run stays RUNNING, no end tag
            logger.committed(logger.spool.last_seq)  # as each tune.report's checkpoint was taken
            assert logger.delivery.flush(60)
            logger.delivery.stop()
            logger.stop_system_metrics()
    return parent


@pytest.fixture(scope="module")
def store(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report-store")
    empty_store(root / "mlflow.db")  # set-up: a copy of an empty store MLflow made (making one takes ~3 s)
    _killed_sweep(data, root, "cut", 4, root)
    _killed_sweep(data, root, "fewer", 2, root)  # started later: `latest`
    return root


def _expected_rows() -> list[report.TrialRow]:
    """The rows of PLAN as the end of a sweep would make them from Tune's results."""
    rows = []
    for i, ((variant, seed), (fvds, end)) in enumerate(PLAN.items()):
        status = {"completed": "completed", "diverged": "diverged", "cut": "unfinished"}[end]
        reason = "training diverged at iteration 1: non-finite critic_loss=nan" if end == "diverged" else ""
        row = report.TrialRow(f"t{i}", variant, "sample", seed, status, reason=reason)
        if fvds:
            best = min(fvds)
            n = len(fvds)
            row.best_fvd, row.final_fvd, row.best_fvd_raw = best, fvds[-1], best + 7.0
            row.best_fvd_ci_low, row.best_fvd_ci_high = best - 3.0, best + 4.0
            row.final_kvd, row.kvd_stderr = fvds[-1] / 100, 0.01 * 2 * n
            row.iterations, row.critic_updates, row.paper_steps = 2 * n, 4 * n, 6 * n
            row.curve = [(2 * (j + 1), f) for j, f in enumerate(fvds)]
        rows.append(row)
    return rows


def test_report_of_a_sweep_killed_halfway_rebuilds_its_table(store: Path, capsys: pytest.CaptureFixture) -> None:
    uri = f"sqlite:///{store}/mlflow.db"
    assert main(["report", "cut", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    expected = report.Comparison(_expected_rows(), n_seeds=2)
    assert expected.table in out
    assert "Sweep cut: 4 trials, 1 completed, 0 stopped_by_asha, 0 failed, 1 diverged, 2 unfinished" in out
    assert "running or interrupted" in out
    gp = next(v for v in expected.variants if v.variant == "gp")
    assert (gp.n_seeds, gp.fvd_mean, gp.completed) == (2, 26.0, 1)  # best of each seed: 25 and 27

    from tune_jobs import history

    record = history.read_sweep(uri, "cut", store / "dl")
    rows = {r.trial_id: r for r in record.rows}
    assert rows["t1"].status == "unfinished" and rows["t1"].curve == [(2, 38.0), (4, 27.0)]
    assert rows["t3"].status == "diverged" and math.isnan(rows["t3"].best_fvd)
    assert record.setting("n_fake") == "4" and record.setting("frames") == "9"


def test_report_latest_writes_markdown_csv_and_a_self_contained_page(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    uri = f"sqlite:///{store}/mlflow.db"
    out = tmp_path / "out"
    assert main(["report", "latest", "--tracking-uri", uri, "--out", str(out)]) == 0
    assert "Sweep fewer:" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([*report.TABLE_FILES, "report.html"])
    table = list(csv.DictReader((out / "trials.csv").open()))
    assert {r["status"] for r in table} == {"completed", "unfinished", "diverged"}
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1 + 1 + 3  # the curves, the real clips, 3 trials' samples
    assert "src=\"http" not in page and "<table>" in page and "eval.n_fake=2" in page
    # files of ours already there are not replaced without --overwrite
    before = (out / "report.html").stat().st_mtime_ns
    assert main(["report", "--tracking-uri", uri, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err and (out / "report.html").stat().st_mtime_ns == before
    assert main(["report", "--tracking-uri", uri, "--out", str(out), "--overwrite"]) == 0


def test_compare_marks_the_evaluation_that_differs(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uri = f"sqlite:///{store}/mlflow.db"
    assert main(["report", "--compare", "cut", "fewer", "--tracking-uri", uri, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "n_fake 4 != 2" in out and "Not comparable where marked" in out
    lines = [line for line in out.splitlines() if line.startswith("| gp |")]
    assert len(lines) == 1 and "26.0" in lines[0] and lines[0].endswith("| no: n_fake 4 != 2 |")
    compared = list(csv.DictReader((tmp_path / "compare.csv").open()))
    assert {r["variant"] for r in compared} == {"gp", "sn"} and all(r["not_comparable"] for r in compared)
    assert (tmp_path / "compare.html").read_text().startswith("<!DOCTYPE html>")
    # the same sweep twice compares
    assert main(["report", "--compare", "cut", "cut", "--tracking-uri", uri]) == 0
    assert "the FVDs compare" in capsys.readouterr().out


def test_a_trial_restarted_after_a_failure_reads_as_running_again(data: Path, tmp_path: Path) -> None:
    """Out of memory fails an attempt; Tune restarts the trial from its checkpoint. Its run must not keep saying
    `failed` while it trains again (`vidgan report` of a running sweep would list it as failed)."""
    from mlflow import MlflowClient

    from tune_jobs import history
    from vidgan.trainer import TrainingOutOfMemory

    spec = _spec(data, tmp_path, "oom", 4)
    empty_store(tmp_path / "mlflow.db")
    uri = tracking.resolve_tracking_uri(spec.mlflow.tracking_uri)
    exp = tracking.ensure_experiment(uri, spec.mlflow.experiment)
    parent = tracking.start_parent_run(uri, exp, "oom")
    ctx = tracking.SweepContext(spec=spec, sweep="oom", tracking_uri=uri, experiment_id=exp, parent_run_id=parent)
    trial = spec.trial({"variant": "gp", "dataset": "sample", "seed": 0})
    first = tracking.TrialLogger(ctx, trial, "t0")
    first.failed(TrainingOutOfMemory(3, "CUDA out of memory"))
    first.delivery.stop()
    client = MlflowClient(uri)
    run_id = first.run_id
    assert history.trial_row(client, client.get_run(run_id)).status == "failed"
    again = tracking.TrialLogger(ctx, trial, "t0")  # the restart: the same run, reopened
    assert again.delivery.flush(60) and again.run_id == run_id
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and history.trial_row(client, run).status == report.UNFINISHED
    reason = run.data.tags[tracking.TAG_REASON]
    assert reason == "an earlier attempt failed: out of memory at iteration 3: CUDA out of memory"
    again.finish()


def test_unknown_sweep_or_store_is_one_line(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uri = f"sqlite:///{store}/mlflow.db"
    assert main(["report", "cutt", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no sweep named or with run id 'cutt'" in err
    assert main(["report", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert "no MLflow store" in capsys.readouterr().err and not (tmp_path / "none.db").exists()


def test_a_sqlite_file_that_is_not_an_mlflow_store_is_refused_untouched(tmp_path: Path, capsys) -> None:
    """MLflow adds its tables to any SQLite database it opens: a user's other database (or a text file) given as
    the store is refused in one line and left as it was."""
    import sqlite3

    other = tmp_path / "inventory.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE items (name TEXT)")
    before = other.read_bytes()
    assert main(["report", "--tracking-uri", f"sqlite:///{other}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "without MLflow's tables" in err and other.read_bytes() == before
    text = tmp_path / "notes.db"
    text.write_text("not a database\n")
    assert main(["report", "--tracking-uri", f"sqlite:///{text}"]) == 2
    assert "is not a SQLite database" in capsys.readouterr().err and text.read_text() == "not a database\n"
