"""Local rehearsal of the cluster path: fake autoscaling GPU cluster, `ray job submit`, teardown.

    python cluster/rehearse.py            # or: make rehearse

1. starts a Ray head on this machine with the ``fake_multinode`` provider (cluster/fake_multinode.yaml):
   token authentication on (a throw-away token in a scratch folder), everything on 127.0.0.1 and
   on non-default ports, its own --temp-dir, no CPUs or GPUs on the head (like cluster.yaml);
2. submits the rehearsal sweep (tune_jobs/rehearsal.yaml: fractional-GPU trials) with
   ``ray job submit --working-dir .``: ``vidgan sweep`` when the sweep service is installed,
   otherwise a built-in miniature Tune sweep with the same resources (``--sweep builtin``);
3. while it runs, prints the worker nodes the autoscaler adds and on which node each trial runs;
4. fetches the job's status and logs with ``ray job status`` / ``ray job logs``;
5. tears down every process it started (found by a marker in their environment; never
   ``ray stop``, which would kill other Ray clusters on the machine) and removes the scratch folder.

Exit status 0 when the job succeeded, at least one worker node was added, and every trial ran on
a worker node. ``--json PATH`` writes the summary for tests.
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
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
FAKE_CONFIG = REPO / "cluster" / "fake_multinode.yaml"
SPEC = REPO / "tune_jobs" / "rehearsal.yaml"
MARKER_VAR = "VIDGAN_REHEARSAL_DIR"
DASHBOARD_PORT = 28265
METRICS_PORT = 28080
CLIENT_PORT = 20001
AGENT_PORT = 28266
AUTOSCALER_METRICS_PORT = 28267
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def log(msg: str) -> None:
    print(f"[rehearse {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def ray_bin() -> str:
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else "ray"


def sweep_available() -> bool:
    """The sweep service (`vidgan sweep`) is there when tune_jobs/cli.py is."""
    return (REPO / "tune_jobs" / "cli.py").exists()


def write_spec(scratch: Path) -> Path:
    """tune_jobs/rehearsal.yaml with data, Tune storage and MLflow in the shared scratch folder."""
    spec = yaml.safe_load(SPEC.read_text())
    for ds in spec["datasets"]:
        ds["path"] = str(scratch / "data" / ds["name"])
    spec["storage_path"] = str(scratch / "tune")  # every fake node shares this disk, like S3
    spec.setdefault("mlflow", {})["tracking_uri"] = f"sqlite:///{scratch / 'mlflow.db'}"
    path = scratch / "rehearsal.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def own_pids(scratch: Path) -> list[int]:
    """Processes carrying this rehearsal's marker in their environment (all descend from `ray start`)."""
    needle = f"{MARKER_VAR}={scratch}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def teardown(scratch: Path, grace_s: float = 15.0) -> int:
    """SIGTERM then SIGKILL this rehearsal's processes; returns how many were left running."""
    pids = own_pids(scratch)
    log(f"teardown: stopping {len(pids)} processes of this rehearsal")
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and own_pids(scratch):
        time.sleep(0.5)
    for pid in own_pids(scratch):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(1.0)
    left = len(own_pids(scratch))
    log(f"teardown: {left} processes left")
    return left


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


def rehearse(args: argparse.Namespace) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="vgr-", dir="/tmp"))  # short: Ray's socket paths must fit
    summary: dict[str, Any] = {"scratch": str(scratch), "ok": False}
    token_path = scratch / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)

    config = yaml.safe_load(FAKE_CONFIG.read_text())
    gcs_address = config["provider"]["gcs_address"]
    gcs_port = int(gcs_address.rsplit(":", 1)[1])
    autoscaling_config = scratch / "autoscaling.yaml"
    autoscaling_config.write_text(yaml.safe_dump(config, sort_keys=False))

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
    # The state API below runs in this process: same token, same cluster.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    dashboard = f"http://127.0.0.1:{DASHBOARD_PORT}"
    ray = ray_bin()
    use_vidgan = args.sweep == "vidgan" or (args.sweep == "auto" and sweep_available())
    summary["sweep"] = "vidgan" if use_vidgan else "builtin"
    t0 = time.monotonic()
    try:
        log(f"starting fake cluster head (GCS {gcs_address}, dashboard {dashboard}, scratch {scratch})")
        out = run(
            [
                ray, "start", "--head",
                f"--port={gcs_port}",
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
            env, timeout=180,
        )  # fmt: skip
        log("head started")
        print(out[-600:], flush=True)

        spec = write_spec(scratch)
        if use_vidgan:
            entrypoint = ["vidgan", "sweep", str(spec), "--address", "auto"]
        else:
            entrypoint = ["python", "cluster/rehearse.py", "--builtin-sweep", str(spec)]
        submission_id = f"vidgan-rehearsal-{int(time.time())}"
        log(f"ray job submit ({summary['sweep']} sweep): {' '.join(entrypoint)}")
        out = run(
            [ray, "job", "submit", "--address", dashboard, "--working-dir", ".",
             "--submission-id", submission_id, "--no-wait", "--", *entrypoint],
            env, timeout=180,
        )  # fmt: skip
        print(out[-800:], flush=True)
        summary["submission_id"] = submission_id

        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(dashboard)
        head_ids: set[str] = set()
        workers_seen: dict[str, dict[str, Any]] = {}
        trials_seen: dict[str, dict[str, Any]] = {}
        status = "PENDING"
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            status = str(client.get_job_status(submission_id).value)
            try:
                nodes = node_table(dashboard)
                actors = trial_actors(dashboard)
            except Exception as exc:  # the state API can be briefly unavailable while nodes join
                log(f"state API: {exc!r}")
                nodes, actors = {}, {}
            for node_id, node in nodes.items():
                if node["is_head"]:
                    head_ids.add(node_id)
                elif node_id not in workers_seen:
                    node["added_after_s"] = round(time.monotonic() - t0, 1)
                    workers_seen[node_id] = node
                    log(f"autoscaler added worker node {node_id[-8:]}: {node['resources']}")
            for actor_id, actor in actors.items():
                known = trials_seen.setdefault(actor_id, actor)
                if actor["node_id"] and not known.get("placed"):
                    known.update(actor, placed=True)
                    where = "HEAD" if actor["node_id"] in head_ids else "worker"
                    log(f"trial actor {actor_id[:8]} placed on {where} node {actor['node_id'][-8:]} "
                        f"(pid {actor['pid']}, {nodes.get(actor['node_id'], {}).get('resources', {})})")  # fmt: skip
            if status in TERMINAL:
                break
            time.sleep(args.poll)
        log(f"job {submission_id} finished polling with status {status}")

        summary["ray_status"] = run([ray, "status", f"--address=127.0.0.1:{gcs_port}"], env, check=False)
        summary["job_status_cli"] = run([ray, "job", "status", "--address", dashboard, submission_id], env, check=False)
        logs = run([ray, "job", "logs", "--address", dashboard, submission_id], env, check=False)
        summary["job_logs_tail"] = logs[-6000:]
        monitor_log = next((scratch / "ray").glob("session_*/logs/monitor.log"), None)
        summary["autoscaler_events"] = (
            [ln for ln in monitor_log.read_text().splitlines() if "Adding" in ln or "launching" in ln.lower()]
            if monitor_log
            else []
        )
        summary["job_status"] = status
        summary["worker_nodes_added"] = list(workers_seen.values())
        summary["trials"] = [
            {**a, "on_worker": a["node_id"] not in head_ids and a["node_id"] in workers_seen}
            for a in trials_seen.values()
        ]
        summary["ok"] = (
            status == "SUCCEEDED"
            and len(workers_seen) >= 1
            and len(trials_seen) >= 1
            and all(t["on_worker"] for t in summary["trials"] if t.get("placed"))
            and any(t.get("placed") for t in summary["trials"])
        )
        print("---- ray status ----\n" + summary["ray_status"][-2500:], flush=True)
        print("---- ray job status ----\n" + summary["job_status_cli"][-800:], flush=True)
        print("---- ray job logs (tail) ----\n" + logs[-4000:], flush=True)
        print("---- autoscaler events ----\n" + "\n".join(summary["autoscaler_events"][-20:]), flush=True)
    finally:
        summary["leftover_processes"] = teardown(scratch)
        summary["elapsed_s"] = round(time.monotonic() - t0, 1)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return summary


# --------------------------------------------------------------------------------------------------
# Built-in miniature sweep: the same cluster path (fractional-GPU Tune trials, metrics, storage on a
# shared path) for when the sweep service (`vidgan sweep`) is not installed.


def builtin_sweep(spec_path: str) -> None:
    import ray
    from ray import tune

    from tune_jobs.metrics import TrialMetrics

    spec = yaml.safe_load(Path(spec_path).read_text())
    res = spec.get("resources", {})
    max_t = int(spec.get("scheduler", {}).get("max_t", 4))

    def trainable(config: dict[str, Any]) -> None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"  # fake GPUs: fall back to CPU
        ctx = ray.get_runtime_context()
        trial = tune.get_context().get_trial_name()
        metrics = TrialMetrics(spec["name"], trial, config["variant"])
        w = torch.randn(64, 64, device=device)
        for it in range(1, max_t + 1):
            start = time.perf_counter()
            for _ in range(20):
                w = torch.tanh(w @ w.T / 64)
            dt = time.perf_counter() - start
            metrics.record(iterations_per_s=20 / dt, clips_per_s=20 * 2 / dt, data_wait_fraction=0.0)
            tune.report(
                {
                    "iteration_": it,
                    "loss": float(w.abs().mean()),
                    "device": device,
                    "node_id": ctx.get_node_id(),
                    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                    "gpu_ids": str(ray.get_gpu_ids()),
                }
            )

    ray.init(address="auto")
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": res.get("cpu", 1), "gpu": res.get("gpu", 0)}),
        param_space={"variant": tune.grid_search(list(spec["variants"]))},
        tune_config=tune.TuneConfig(metric="loss", mode="min", max_concurrent_trials=spec.get("max_concurrent_trials")),
        run_config=tune.RunConfig(name=spec["name"], storage_path=spec.get("storage_path"), verbose=1),
    )
    results = tuner.fit()
    for r in results:
        m = r.metrics or {}
        print(
            f"trial {m.get('trial_id')} variant={r.config['variant']} node={str(m.get('node_id'))[-8:]} "
            f"device={m.get('device')} CUDA_VISIBLE_DEVICES={m.get('cuda_visible_devices')!r} "
            f"gpu_ids={m.get('gpu_ids')} iterations={m.get('training_iteration')} error={r.error}",
            flush=True,
        )
    if results.errors:
        raise SystemExit(f"{len(results.errors)} trial(s) failed")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sweep", choices=["auto", "vidgan", "builtin"], default="auto",
                   help="auto: `vidgan sweep` if the sweep service is installed, else the built-in one")  # fmt: skip
    p.add_argument("--timeout", type=float, default=480, help="seconds to wait for the job")
    p.add_argument("--poll", type=float, default=3.0, help="seconds between status polls")
    p.add_argument("--json", type=Path, help="write the summary here")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (Ray logs)")
    p.add_argument("--builtin-sweep", metavar="SPEC", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.builtin_sweep:
        builtin_sweep(args.builtin_sweep)
        return 0
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
