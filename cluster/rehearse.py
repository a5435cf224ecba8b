"""Local rehearsal of the cluster path: fake autoscaling GPU cluster, `ray job submit`, teardown.

    python cluster/rehearse.py            # or: make rehearse

0. ``start_storage`` starts what a cloud cluster shares: an S3 API on localhost (moto's server,
   cluster/local_s3.py) with the bucket ``vidgan-rehearsal``, and an MLflow server whose artifacts go to that
   bucket (``--artifacts-destination s3://...``, as cluster.yaml's head runs it). The sweep's dataset, Tune
   storage and MLflow artifacts all live in the bucket, as on AWS: the cloud path CI runs is the one users run;
1. ``start_cluster`` starts a Ray head on this machine with the ``fake_multinode`` provider
   (cluster/fake_multinode.yaml): token authentication on (a throw-away token in a scratch folder),
   everything on 127.0.0.1 and on non-default ports, its own --temp-dir, no CPUs or GPUs on the head
   (like cluster.yaml);
2. ``submit_sweep`` submits the rehearsal sweep (tune_jobs/rehearsal.yaml: fractional-GPU trials)
   with ``ray job submit --working-dir .`` as ``vidgan sweep <spec> --address auto``;
3. ``watch_job``, while it runs, prints the worker nodes the autoscaler adds and on which node each
   trial runs;
4. ``collect_results`` fetches the job's status and logs with ``ray job status`` / ``ray job logs``;
5. ``teardown`` stops every process it started (found by a marker in their environment, or as a descendant of
   one, and followed to its end; never ``ray stop``, which would kill other Ray clusters on the machine) and
   removes the scratch folder.

Exit status 0 when the job succeeded, at least one worker node was added, every trial ran on a
worker node, and the bucket holds the dataset, Tune's checkpoints and MLflow's artifacts.
``--json PATH`` writes the summary for tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # cluster.local_s3 when run as `python cluster/rehearse.py`
from cluster import procs  # noqa: E402

FAKE_CONFIG = REPO / "cluster" / "fake_multinode.yaml"
SPEC = REPO / "tune_jobs" / "rehearsal.yaml"
MARKER_VAR = "VIDGAN_REHEARSAL_DIR"
DASHBOARD_PORT = 28265
METRICS_PORT = 28080
CLIENT_PORT = 20001
AGENT_PORT = 28266
AUTOSCALER_METRICS_PORT = 28267
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
BUCKET = "vidgan-rehearsal"


def log(msg: str) -> None:
    print(f"[rehearse {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ray_bin() -> str:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else "ray"


def write_spec(scratch: Path, storage: Storage) -> Path:
    """tune_jobs/rehearsal.yaml with its data and Tune storage in the bucket and MLflow on the server."""
    spec = yaml.safe_load(SPEC.read_text())
    for ds in spec["datasets"]:
        ds["path"] = f"{storage.root}/data/{ds['name']}"
    spec["storage_path"] = f"{storage.root}/tune"
    spec.setdefault("mlflow", {})["tracking_uri"] = storage.mlflow
    path = scratch / "rehearsal.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@dataclass
class Storage:
    """What every node shares, as on a cloud cluster: the bucket (on a local S3 server) and the MLflow server."""

    endpoint: str  # the S3 API
    root: str  # s3://vidgan-rehearsal/vidgan
    mlflow: str  # the tracking server's URI
    env: dict[str, str]  # what points boto3 and pyarrow at the S3 API


def start_storage(scratch: Path) -> Storage:
    """The local S3 server with the bucket, and an MLflow server that proxies its artifacts to the bucket. Both carry
    the rehearsal's marker, so :func:`teardown` stops them with the cluster."""
    from cluster import local_s3
    from tune_jobs import tracking

    env = {**os.environ, MARKER_VAR: str(scratch)}
    _, endpoint = local_s3.start_moto(scratch / "moto.log", env=env)
    s3 = local_s3.s3_env(endpoint)
    bucket = local_s3.make_bucket(BUCKET, endpoint)
    port = local_s3.free_port()
    mlflow = f"http://127.0.0.1:{port}"
    with open(scratch / "mlflow.log", "ab") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
             f"sqlite:///{scratch / 'mlflow.db'}", "--artifacts-destination", f"{bucket}/vidgan/mlflow",
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env={**env, **s3, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, cwd=scratch, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 300  # only a broken install takes this long
    while True:
        try:
            tracking.check_health(mlflow, timeout_s=2)
            break
        except tracking.TrackingUnavailable:
            if server.poll() is not None or time.monotonic() > deadline:
                tail = (scratch / "mlflow.log").read_text()[-1500:]
                raise RuntimeError(f"the MLflow server did not start: {tail}") from None
            time.sleep(0.5)
    log(f"S3 API at {endpoint} (bucket {bucket}), MLflow at {mlflow} with its artifacts in {bucket}/vidgan/mlflow")
    return Storage(endpoint, f"{bucket}/vidgan", mlflow, s3)


def bucket_contents(storage: Storage) -> dict[str, int]:
    """How many objects of each kind the sweep left in the bucket."""
    from cluster import local_s3

    keys = local_s3.list_keys(BUCKET, storage.endpoint)
    found = {
        "dataset_manifests": sum(k.startswith("vidgan/data/") and k.endswith("/manifest.json") for k in keys),
        "tune_checkpoints": sum(k.startswith("vidgan/tune/") and "/checkpoint_" in k for k in keys),
        "mlflow_artifacts": sum(k.startswith("vidgan/mlflow/") for k in keys),
    }
    log(f"bucket {BUCKET}: {found}")
    return found


def own_processes(scratch: Path) -> dict[int, int]:
    """This rehearsal's running processes, pid -> start time: those carrying its marker in their environment (all
    descend from `ray start` or were started with it) and every descendant of one. A process that renames itself
    (setproctitle: Ray's agents and dashboard modules) may overwrite what /proc shows as its environment, so it is
    found through its parent instead."""
    needle = f"{MARKER_VAR}={scratch}".encode()
    table = procs.running()
    marked = set()
    for pid in table:
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                marked.add(pid)
    own = marked | procs.descendants(marked)
    return {pid: table[pid].started for pid in own if pid in table}


def _alive(processes: dict[int, int]) -> dict[int, int]:
    """Those of ``processes`` (pid -> start time) still running: the same pid and start time, not a zombie."""
    alive = {}
    for pid, started in processes.items():
        s = procs.stat(pid)
        if s is not None and s.started == started and s.state != "Z":
            alive[pid] = started
    return alive


def teardown(scratch: Path, grace_s: float = 3.0) -> int:
    """SIGTERM then SIGKILL this rehearsal's processes; returns how many were left running. Every process found once
    is followed to its end: one whose parent (a raylet) died first is no longer anyone's descendant, and Ray's
    agents, renamed, may no longer show the marker."""
    known = own_processes(scratch)
    log(f"teardown: stopping {len(known)} processes of this rehearsal")
    for pid in known:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        known = _alive({**known, **own_processes(scratch)})
        if not known:
            break
        time.sleep(0.5)
    for pid in _alive({**known, **own_processes(scratch)}):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(1.0)
    left = _alive({**known, **own_processes(scratch)})
    log(f"teardown: {len(left)} processes left" + (f": {sorted(left)}" if left else ""))
    return len(left)


def run(cmd: list[str], env: dict[str, str], timeout: float = 120, check: bool = True) -> str:
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def node_table(dashboard: str) -> dict[str, dict[str, Any]]:
    from ray.util.state import list_nodes

    nodes = {}
    for n in list_nodes(address=dashboard, detail=True, raise_on_missing_output=False):
        nodes[n.node_id] = {
            "node_id": n.node_id,
            "is_head": bool(n.is_head_node),
            "state": n.state,
            "resources": dict(n.resources_total or {}),
            "type": (n.labels or {}).get("ray.io/node-group") or (n.labels or {}).get("ray.io/node_type"),
        }
    return nodes


def trial_actors(dashboard: str) -> dict[str, dict[str, Any]]:
    """Tune trial actors (class ImplicitFunc for function trainables, else the Trainable's class)."""
    from ray.util.state import list_actors

    found = {}
    for a in list_actors(address=dashboard, detail=True, limit=1000, raise_on_missing_output=False):
        cls = a.class_name or ""
        if cls in {"ImplicitFunc"} or "Trainable" in cls or cls.startswith("train"):
            found[a.actor_id] = {
                "actor_id": a.actor_id,
                "class": cls,
                "name": a.repr_name or a.name or "",
                "node_id": a.node_id,
                "pid": a.pid,
                "state": a.state,
            }
    return found


@dataclass
class Cluster:
    """The fake cluster this rehearsal started: its scratch folder, environment and addresses."""

    scratch: Path
    env: dict[str, str]
    gcs_port: int
    dashboard: str = f"http://127.0.0.1:{DASHBOARD_PORT}"
    ray: str = field(default_factory=ray_bin)
    t0: float = field(default_factory=time.monotonic)


@dataclass
class Watch:
    """What polling the job saw: its last status, the head, the worker nodes added, the trial actors."""

    status: str = "PENDING"
    head_ids: set[str] = field(default_factory=set)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    trials: dict[str, dict[str, Any]] = field(default_factory=dict)


def write_token(scratch: Path) -> Path:
    """A throw-away auth token for this rehearsal only."""
    token_path = scratch / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    return token_path


def cluster_env(scratch: Path, token_path: Path) -> dict[str, str]:
    """Environment of every process the rehearsal starts: marker, token auth, fast fake autoscaler."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(
        {
            MARKER_VAR: str(scratch),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token_path),
            "RAY_FAKE_CLUSTER": "1",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "AUTOSCALER_METRIC_PORT": str(AUTOSCALER_METRICS_PORT),
            "RAY_USAGE_STATS_ENABLED": "0",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            # the autoscaler imports cluster.fake_provider from the repository
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
        }
    )
    return env


def start_cluster(scratch: Path, storage: Storage) -> Cluster:
    """`ray start --head` with the fake_multinode autoscaler, token auth, 127.0.0.1 and own ports."""
    token_path = write_token(scratch)
    config = yaml.safe_load(FAKE_CONFIG.read_text())
    gcs_address = config["provider"]["gcs_address"]
    autoscaling_config = scratch / "autoscaling.yaml"
    autoscaling_config.write_text(yaml.safe_dump(config, sort_keys=False))
    cluster = Cluster(scratch, {**cluster_env(scratch, token_path), **storage.env}, int(gcs_address.rsplit(":", 1)[1]))
    # The state API (watch_job) runs in this process: same token, same cluster.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    log(f"starting fake cluster head (GCS {gcs_address}, dashboard {cluster.dashboard}, scratch {scratch})")
    out = run(
        [
            cluster.ray, "start", "--head",
            f"--port={cluster.gcs_port}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={DASHBOARD_PORT}",
            f"--dashboard-agent-listen-port={AGENT_PORT}",
            f"--metrics-export-port={METRICS_PORT}",
            f"--ray-client-server-port={CLIENT_PORT}",
            f"--temp-dir={scratch / 'ray'}",
            f"--autoscaling-config={autoscaling_config}",
            "--num-cpus=0", "--num-gpus=0",
            "--disable-usage-stats",
        ],
        cluster.env, timeout=180,
    )  # fmt: skip
    log("head started")
    print(out[-600:], flush=True)
    return cluster


def submit_sweep(cluster: Cluster, storage: Storage) -> str:
    """`ray job submit --working-dir . -- vidgan sweep <spec>`; returns the submission id."""
    spec = write_spec(cluster.scratch, storage)
    entrypoint = ["vidgan", "sweep", str(spec), "--address", "auto"]
    submission_id = f"vidgan-rehearsal-{int(time.time())}"
    log(f"ray job submit: {' '.join(entrypoint)}")
    out = run(
        [cluster.ray, "job", "submit", "--address", cluster.dashboard, "--working-dir", ".",
         "--submission-id", submission_id, "--no-wait", "--", *entrypoint],
        cluster.env, timeout=180,
    )  # fmt: skip
    print(out[-800:], flush=True)
    return submission_id


def note_nodes(watch: Watch, nodes: dict[str, dict[str, Any]], t0: float) -> None:
    """Remember the head and log each worker node the autoscaler adds (with its time since start)."""
    for node_id, node in nodes.items():
        if node["is_head"]:
            watch.head_ids.add(node_id)
        elif node_id not in watch.workers:
            node["added_after_s"] = round(time.monotonic() - t0, 1)
            watch.workers[node_id] = node
            log(f"autoscaler added worker node {node_id[-8:]}: {node['resources']}")


def note_trials(watch: Watch, nodes: dict[str, dict[str, Any]], actors: dict[str, dict[str, Any]]) -> None:
    """Remember each trial actor and log the node it is placed on, once."""
    for actor_id, actor in actors.items():
        known = watch.trials.setdefault(actor_id, actor)
        if actor["node_id"] and not known.get("placed"):
            known.update(actor, placed=True)
            where = "HEAD" if actor["node_id"] in watch.head_ids else "worker"
            log(f"trial actor {actor_id[:8]} placed on {where} node {actor['node_id'][-8:]} "
                f"(pid {actor['pid']}, {nodes.get(actor['node_id'], {}).get('resources', {})})")  # fmt: skip


def watch_job(cluster: Cluster, submission_id: str, timeout: float, poll: float) -> Watch:
    """Poll the job until it ends (or `timeout`), noting worker nodes and where trials run."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(cluster.dashboard)
    watch = Watch()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watch.status = str(client.get_job_status(submission_id).value)
        try:
            nodes = node_table(cluster.dashboard)
            actors = trial_actors(cluster.dashboard)
        except Exception as exc:  # the state API can be briefly unavailable while nodes join
            log(f"state API: {exc!r}")
            nodes, actors = {}, {}
        note_nodes(watch, nodes, cluster.t0)
        note_trials(watch, nodes, actors)
        if watch.status in TERMINAL:
            break
        time.sleep(poll)
    log(f"job {submission_id} finished polling with status {watch.status}")
    return watch


def autoscaler_events(scratch: Path) -> list[str]:
    """Lines of the autoscaler's monitor.log that add or launch nodes."""
    monitor_log = next((scratch / "ray").glob("session_*/logs/monitor.log"), None)
    if monitor_log is None:
        return []
    return [ln for ln in monitor_log.read_text().splitlines() if "Adding" in ln or "launching" in ln.lower()]


def collect_results(cluster: Cluster, submission_id: str, watch: Watch) -> dict[str, Any]:
    """`ray status`, `ray job status`, `ray job logs` and autoscaler events; prints them; judges ok."""
    ray, env, dashboard = cluster.ray, cluster.env, cluster.dashboard
    result: dict[str, Any] = {
        "ray_status": run([ray, "status", f"--address=127.0.0.1:{cluster.gcs_port}"], env, check=False),
        "job_status_cli": run([ray, "job", "status", "--address", dashboard, submission_id], env, check=False),
    }
    logs = run([ray, "job", "logs", "--address", dashboard, submission_id], env, check=False)
    trials = [
        {**a, "on_worker": a["node_id"] not in watch.head_ids and a["node_id"] in watch.workers}
        for a in watch.trials.values()
    ]
    result.update(
        job_logs_tail=logs[-6000:],
        autoscaler_events=autoscaler_events(cluster.scratch),
        job_status=watch.status,
        worker_nodes_added=list(watch.workers.values()),
        trials=trials,
        ok=(
            watch.status == "SUCCEEDED"
            and len(watch.workers) >= 1
            and len(watch.trials) >= 1
            and all(t["on_worker"] for t in trials if t.get("placed"))
            and any(t.get("placed") for t in trials)
        ),
    )
    print("---- ray status ----\n" + result["ray_status"][-2500:], flush=True)
    print("---- ray job status ----\n" + result["job_status_cli"][-800:], flush=True)
    print("---- ray job logs (tail) ----\n" + logs[-4000:], flush=True)
    print("---- autoscaler events ----\n" + "\n".join(result["autoscaler_events"][-20:]), flush=True)
    return result


def rehearse(args: argparse.Namespace) -> dict[str, Any]:
    """Start, submit, watch, collect; always tear down. Returns the summary."""
    scratch = Path(tempfile.mkdtemp(prefix="vgr-", dir="/tmp"))  # short: Ray's socket paths must fit
    summary: dict[str, Any] = {"scratch": str(scratch), "ok": False}
    t0 = time.monotonic()
    try:
        storage = start_storage(scratch)
        cluster = start_cluster(scratch, storage)
        summary["submission_id"] = submission_id = submit_sweep(cluster, storage)
        watch = watch_job(cluster, submission_id, args.timeout, args.poll)
        summary.update(collect_results(cluster, submission_id, watch))
        summary["bucket"] = bucket_contents(storage)
        summary["ok"] = summary["ok"] and all(summary["bucket"].values())
    finally:
        summary["leftover_processes"] = teardown(scratch)
        summary["elapsed_s"] = round(time.monotonic() - t0, 1)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--timeout", type=float, default=480, help="seconds to wait for the job")
    p.add_argument("--poll", type=float, default=3.0, help="seconds between status polls")
    p.add_argument("--json", type=Path, help="write the summary here")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (Ray logs)")
    args = p.parse_args(argv)
    summary = rehearse(args)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    log(
        f"summary: job {summary.get('job_status')}, {len(summary.get('worker_nodes_added', []))} worker "
        f"node(s) added, {len(summary.get('trials', []))} trial actor(s), all on workers: "
        f"{all(t['on_worker'] for t in summary.get('trials', []))}, leftover processes "
        f"{summary['leftover_processes']}, {summary['elapsed_s']} s -> {'OK' if summary['ok'] else 'FAILED'}"
    )
    return 0 if summary["ok"] and summary["leftover_processes"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
