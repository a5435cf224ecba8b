"""A worker node SIGKILLed mid-trial (its raylet and its workers) on a real multi-node Ray cluster on this machine
(ray.cluster_utils.Cluster: a head without CPUs and two 1-CPU worker nodes, started by this module in its own
temp folder) and a real ``mlflow server``: the trial resumes from its checkpoint on another node, the sweep log
says so in one line, the summary and table count the restart and the trial's run carries it, and MLflow holds
every evaluation step once. The long rehearsal (>= 3 kills and a drain, `make chaos`) is cluster/chaos.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow_server import Server

from cluster.chaos import kill_node, runs_a_trial
from tune_jobs import tracking
from tune_jobs.spec import parse_spec
from tune_jobs.sweep import run_sweep

pytestmark = pytest.mark.slow

#: a deadline only a real hang reaches: every wait below ends at its event
HANG_S = 900


@pytest.fixture(scope="module")
def cluster():
    """Head (no CPUs) + two 1-CPU worker nodes, in a private temp folder (Ray's default health checks: shorter
    ones declare live nodes of a loaded 2-core machine dead)."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    temp = tempfile.mkdtemp(prefix="vgk-", dir="/tmp")  # short: Ray's socket paths must fit
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp
    Path(temp, "ray").mkdir()  # where Ray writes the address of the cluster it starts ($RAY_TMPDIR/ray)
    for attempt in range(3):  # a raylet gets 30 s to register: on a loaded 2-core machine it may take longer
        try:
            # shutdown_at_exit=False: a node added with it registers a SIGTERM handler, which only the main thread
            # may do, and the killer adds the replacement from its thread; this fixture shuts the cluster down
            c = Cluster(initialize_head=True, connect=True, shutdown_at_exit=False,
                        head_node_args={"num_cpus": 0, "temp_dir": f"{temp}/ray", "include_dashboard": False})
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    workers = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    yield c, workers
    ray.shutdown()
    c.shutdown()
    if saved is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = saved
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("mlflow-server"))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def data(tmp_path_factory, cluster):
    from vidgan.ingest import ingest_sample

    root = tmp_path_factory.mktemp("kill")
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
        "scheduler": {"type": "fifo", "max_t": 12, "grace_period": 2},
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


def test_killed_node_resumes_the_trial_where_it_left_and_says_so(data: Path, server: Server, cluster,
                                                                 caplog) -> None:
    c, workers = cluster
    spec = parse_spec(_spec(data, server.uri, "kill", variants=["gp"],
                            scheduler={"type": "fifo", "max_t": 6, "grace_period": 2}))
    killed: dict[str, str] = {}
    sweep_over = threading.Event()

    def killer() -> None:  # after the first checkpointed evaluation reached MLflow: kill the trial's node
        deadline = time.monotonic() + HANG_S
        node = None
        while node is None and time.monotonic() < deadline and not sweep_over.is_set():
            time.sleep(0.5)
            node = next(filter(runs_a_trial, workers), None) if _fvd_steps(server.uri) >= 1 else None
        if node is None:
            return  # the trial ended first, or a hang: no kill, and the assertions below say so
        kill_node(c, node)
        workers.remove(node)
        killed["node"] = node.node_id
        workers.append(c.add_node(num_cpus=1))  # the replacement, as an autoscaler brings one
        killed["replacement"] = workers[-1].node_id

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    with caplog.at_level(logging.WARNING, logger="tune_jobs.sweep"):
        try:
            outcome = run_sweep(spec, name="kill", verbose=0)
        finally:
            sweep_over.set()
    thread.join(timeout=HANG_S)  # it ended long ago: the sweep's end came after the restore
    assert "node" in killed and "replacement" in killed, killed

    (row,) = outcome.rows
    assert row.status == "completed" and row.iterations == 6 and row.restarts == 1
    assert "1 restart from checkpoints (1 node lost)" in outcome.restart_line()
    assert "| restarts |" in outcome.table
    lines = [r.getMessage() for r in caplog.records if "resumed from iteration" in r.getMessage()]
    assert len(lines) == 1 and f"node lost on node {killed['node'][:8]}" in lines[0], lines
    resumed_at = int(lines[0].split("resumed from iteration ")[1].split()[0])
    assert resumed_at in (2, 4)

    (run,) = _runs(server.uri, outcome.parent_run_id)  # one run, continued after the restart
    client = MlflowClient(server.uri)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "fvd")) == [2, 4, 6]
    tags = run.data.tags
    assert tags["vidgan.restarts"] == "1" and tags["vidgan.restart_log"] == f"{resumed_at}:node lost"
    assert "Restarted once (node lost, resumed from iteration" in tags[tracking.TAG_NOTE]
