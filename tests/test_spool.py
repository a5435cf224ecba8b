"""The tracking spool (tune_jobs/spool.py) against a real ``mlflow server`` process (SQLite store) reached through
a cable the test unplugs and plugs back (tests/mlflow_server.py): a trial's evaluations never wait for MLflow,
and reach it in order and exactly once after an outage and after a move to another node (a new logger restored
from the checkpoint's spool); a run restored from an older backup gets back what it missed (a SQLite store); a
restart from an older checkpoint never writes a step twice. No Ray: the trial's logger (TrialLogger) is driven
as train_trial drives it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow_server import Cable, Server

from tune_jobs import spool, tracking
from tune_jobs.spec import parse_spec
from tune_jobs.tracking import SweepContext

#: a deadline only a real hang reaches (an evaluation here takes about a second)
HANG_S = 120


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("spool-server"))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def cable(server):
    c = Cable(server.port)
    yield c
    c.unplug()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from vidgan.ingest import ingest_sample

    root = tmp_path_factory.mktemp("spool-data")
    ingest_sample(root / "data", frames=16, size=32, stride=8)
    return root / "data"


def _context(data: Path, uri: str, sweep: str) -> SweepContext:
    spec = parse_spec({
        "name": sweep, "datasets": [{"name": "sample", "path": str(data)}],
        "model": {"frames": 16, "size": 32, "width": 4, "z_dim": 8}, "variants": ["gp"],
        "eval": {"every": 2, "n_real": 8, "n_fake": 4, "frames": 9, "batch_size": 4, "grid": 4},
        "scheduler": {"type": "fifo", "max_t": 6, "grace_period": 2},
        "mlflow": {"tracking_uri": uri, "experiment": "spool"},
    })
    experiment = tracking.ensure_experiment(uri, "spool")
    parent = tracking.start_parent_run(uri, experiment, sweep)
    return SweepContext(spec=spec, sweep=sweep, tracking_uri=uri, experiment_id=experiment, parent_run_id=parent)


def _result(step: int) -> dict[str, float]:
    return {"critic_loss": 1.0 / step, "wasserstein": 0.5, "generator_loss": -0.2, "iterations_per_s": 3.0,
            "clips_per_s": 24.0, "data_wait_fraction": 0.1, "fvd": 100.0 - step, "kvd": 0.5, "kvd_stderr": 0.01,
            "n_fake": 4, "n_real": 8, "iteration": step, "critic_updates": 2 * step, "generator_updates": step,
            "paper_steps": 3 * step, "gpu_memory_bytes": 0.0, "eval_time_s": 0.5}


def _evaluate(logger: tracking.TrialLogger, step: int, history: list, folder: Path) -> Path:
    """One evaluation as train_trial does it: report, checkpoint (with the spool), Tune has it, commit."""
    history.append({"iteration": step, "fvd": 100.0 - step})
    samples = np.random.default_rng(step).integers(0, 256, (4, 16, 32, 32, 3), dtype=np.uint8)
    logger.report(_result(step), history, samples, folder)
    checkpoint = folder / f"checkpoint_{step}"
    checkpoint.mkdir()
    (checkpoint / "history.json").write_text(json.dumps(history))
    logger.committed(logger.checkpointed(checkpoint))
    return checkpoint


def _steps(client: MlflowClient, run_id: str, key: str = "fvd") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.mark.slow  # a real mlflow server
def test_outage_neither_blocks_nor_loses_and_a_moved_trial_delivers_the_rest(data: Path, cable: Cable,
                                                                            tmp_path: Path) -> None:
    ctx = _context(data, cable.uri, "outage")
    trial = ctx.spec.trial({"variant": "gp", "dataset": "sample", "seed": 0})
    logger = tracking.TrialLogger(ctx, trial, "t1", folder=tmp_path / "node1")
    run_id = logger.run_id
    history: list = []
    _evaluate(logger, 2, history, tmp_path)
    assert logger.delivery.flush(60)

    cable.unplug()  # MLflow goes away: evaluations go on at their own pace
    for step in (4, 6):
        t0 = time.monotonic()
        checkpoint = _evaluate(logger, step, history, tmp_path)
        # a hang guard, not a timing: the evaluation's records wait in the spool (the backlog below), and an
        # evaluation that waited for MLflow to come back would wait here until the deadline
        assert time.monotonic() - t0 < HANG_S, "an evaluation waited for MLflow"
    deadline = time.monotonic() + 600  # only a hang reaches it: the wait ends when the delivery thread has failed
    while logger.delivery.outage.down_since is None:
        assert time.monotonic() < deadline, "the delivery thread never found MLflow down"
        time.sleep(0.05)
    assert logger.backlog() > 0
    logger.delivery.stop()  # the node dies with undelivered records: they are in the checkpoint's spool

    cable.plug()
    client = MlflowClient(cable.uri)
    assert _steps(client, run_id) == [2]
    # the trial restored from its last checkpoint on another node: its logger delivers what the run lacks
    moved = tracking.TrialLogger(ctx, trial, "t1", folder=tmp_path / "node2", checkpoint=checkpoint)
    assert moved.run_id == run_id
    assert moved.delivery.flush(60)
    assert _steps(client, run_id) == [2, 4, 6]
    assert _steps(client, run_id, "loss/critic") == [2, 4, 6]
    images = [a.path for a in client.list_artifacts(run_id, "images") if "+compressed" not in a.path
              and a.path.endswith(".png")]
    assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in images) == [2, 4, 6]  # each image once
    videos = {a.path for a in client.list_artifacts(run_id, "samples")}
    assert {f"samples/samples_{s:07d}.gif" for s in (2, 4, 6)} <= videos
    run = client.get_run(run_id)
    assert run.data.tags[tracking.TAG_NOTE].startswith("**gp** on `sample`, seed 0: running at iteration 6")
    assert run.data.metrics["best_fvd"] == 94.0 and run.data.tags[spool.TAG_DELIVERED].startswith(
        f"{moved.spool.last_seq}:")

    # the driver's reconciliation with that checkpoint (whose spool lacks what the moved trial logged since): sent
    # again in repair mode, nothing appears twice
    assert spool.reconcile(client, run_id, checkpoint / tracking.SPOOL_DIR) > 0
    assert [m.step for m in client.get_metric_history(run_id, "fvd")] == [2, 4, 6]
    assert [m.step for m in client.get_metric_history(run_id, "loss/critic")] == [2, 4, 6]
    moved.finish()


def test_a_run_restored_from_an_older_backup_gets_back_what_it_missed(data: Path, tmp_path: Path) -> None:
    # a SQLite store (a real MLflow store; the same code path as behind a server), copied as a backup would be
    db = tmp_path / "mlflow.db"
    ctx = _context(data, f"sqlite:///{db}", "backup")
    trial = ctx.spec.trial({"variant": "gp", "dataset": "sample", "seed": 0})
    logger = tracking.TrialLogger(ctx, trial, "t1", folder=tmp_path / "node")
    history: list = []
    _evaluate(logger, 2, history, tmp_path)
    assert logger.delivery.flush(60)
    backup = tmp_path / "backup.db"
    backup.write_bytes(db.read_bytes())  # a consistent copy: nothing is writing now
    checkpoint = None
    for step in (4, 6):
        checkpoint = _evaluate(logger, step, history, tmp_path)
    assert logger.delivery.flush(60)
    logger.finish()

    db.write_bytes(backup.read_bytes())  # MLflow restored from the older backup
    client = MlflowClient(ctx.tracking_uri)
    assert _steps(client, logger.run_id) == [2]
    sent = spool.reconcile(client, logger.run_id, checkpoint / tracking.SPOOL_DIR)
    assert sent > 0 and _steps(client, logger.run_id) == [2, 4, 6]
    assert _steps(client, logger.run_id, "best_fvd") == [2, 4, 6]


@pytest.mark.slow  # a real mlflow server
def test_a_restart_from_an_older_checkpoint_never_logs_a_step_twice(data: Path, cable: Cable,
                                                                   tmp_path: Path) -> None:
    ctx = _context(data, cable.uri, "lineage")
    trial = ctx.spec.trial({"variant": "gp", "dataset": "sample", "seed": 0})
    logger = tracking.TrialLogger(ctx, trial, "t1", folder=tmp_path / "life1")
    history: list = []
    older = _evaluate(logger, 2, history, tmp_path)
    _evaluate(logger, 4, history, tmp_path)  # delivered, but (say) the driver's state only knew checkpoint 2
    assert logger.delivery.flush(60)
    logger.delivery.stop()

    again = tracking.TrialLogger(ctx, trial, "t1", folder=tmp_path / "life2", checkpoint=older)
    assert again.delivery.flush(60)
    history = history[:1]
    (tmp_path / "checkpoint_4").rename(tmp_path / "old_checkpoint_4")  # the first life's, out of the way
    for step in (4, 6):  # step 4 recomputed (another value would be the same step twice)
        _evaluate(again, step, history, tmp_path)
    assert again.delivery.flush(60)
    client = MlflowClient(cable.uri)
    assert [m.step for m in client.get_metric_history(logger.run_id, "fvd")] == [2, 4, 6]
    images = [a.path for a in client.list_artifacts(logger.run_id, "images") if "+compressed" not in a.path
              and a.path.endswith(".png")]
    assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in images) == [2, 4, 6]
    again.finish()
