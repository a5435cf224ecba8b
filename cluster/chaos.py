"""Fault rehearsal: a real sweep on a multi-node Ray cluster on this machine while worker nodes die.

    python cluster/chaos.py            # or: make chaos   (CI-sized: --kills 1 --no-drain)

``ray.cluster_utils.Cluster`` starts a head without CPUs and ``--workers`` worker nodes (own temp folder, so
other Ray clusters on the machine are never touched). The same sweep (``--trials`` trials of a tiny model,
checkpoint at every evaluation) runs twice: undisturbed, then while a killer SIGKILLs a random worker node that
holds a trial (its raylet and every process under it) at random times after warm-up, ``--kills`` times, and
drains one node as a spot preemption notice does (``ray drain-node``'s GCS call, reason PREEMPTION) before
killing it; after each loss a replacement node joins, as an autoscaler brings one.

Pass, as Ray's own release test for Tune's fault tolerance: every trial ends at max_t; its final checkpoint's
iteration equals max_t and its last reported result; every restore found a checkpoint; exactly one MLflow run
per trial; each trial's ``fvd`` history holds every evaluation step exactly once; the comparison table equals
the union of the trials' checkpoint histories; the drained node's trial restarted as ``preempted`` (which Tune
does not count against max_failures). Prints the kills survived, the iterations recomputed per kill and the
wall-time overhead against the undisturbed run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # cluster.procs when run as `python cluster/chaos.py`
from cluster import procs  # noqa: E402


def say(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def spec_dict(root: Path, name: str, trials: int, max_t: int) -> dict[str, Any]:
    variants = ["gp", "sn", "r1", "zero_gp", "one_sided", "wgan"][:trials]
    return {
        "name": name,
        "datasets": [{"name": "sample", "path": str(root / "data")}],
        "model": {"frames": 16, "size": 32, "width": 4, "z_dim": 8},
        "train": {"batch_size": 4, "n_critic": 2, "ema": False},
        "variants": variants,
        "eval": {"every": 2, "n_real": 8, "n_fake": 4, "frames": 9, "batch_size": 4, "grid": 0,
                 "generator": "raw", "bootstrap": 0},
        "scheduler": {"type": "fifo", "max_t": max_t, "grace_period": 2},
        "resources": {"cpu": 1, "data_cpu": 0, "threads": 1},
        "max_failures": 10,
        "mlflow": {"tracking_uri": f"sqlite:///{root}/mlflow.db", "experiment": "chaos"},
        "storage_path": str(root / "results"),
    }


# ------------------------------------------------------------------------------------------ nodes
def kill_node(cluster: Any, node: Any) -> None:
    """SIGKILL a worker node this script started: its raylet and every process under it."""
    from ray._private import ray_constants

    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    for pid in [raylet, *procs.descendants({raylet})]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    cluster.remove_node(node, allow_graceful=False)


def drain(node_id: str, gcs_address: str, deadline_s: int = 5) -> bool:
    """What `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION` does (a spot node's termination notice)."""
    import ray
    from ray.core.generated import autoscaler_pb2

    client = ray._raylet.GcsClient(address=gcs_address)
    accepted, why = client.drain_node(node_id, autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
                                      "chaos rehearsal: spot preemption notice", int(time.time() * 1000) + deadline_s
                                      * 1000)
    if not accepted:
        say(f"drain of {node_id[:8]} refused: {why}")
    return bool(accepted)


def runs_a_trial(node: Any) -> bool:
    """Whether a trial worker (ray::ImplicitFunc) runs under the node's raylet (no state API: no dashboard)."""
    from ray._private import ray_constants

    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    return any(procs.cmdline_starts(pid, b"ray::ImplicitFunc") for pid in procs.descendants({raylet}))

class Killer(threading.Thread):
    """After warm-up (every trial has a checkpoint), at random times: SIGKILL a worker node holding a trial, then
    bring a replacement; ``kills`` times, then one drain (preemption notice) followed by the kill."""

    def __init__(self, cluster: Any, workers: list, kills: int, do_drain: bool, results: Path, trials: int,
                 gap_s: tuple[float, float], seed: int) -> None:
        super().__init__(daemon=True)
        self.cluster, self.workers, self.kills, self.do_drain = cluster, workers, kills, do_drain
        self.results, self.trials, self.gap_s = results, trials, gap_s
        self.rng = random.Random(seed)
        self.events: list[dict[str, Any]] = []
        self.done = threading.Event()

    def _warm(self) -> bool:
        """Every trial of this sweep (``results`` is its own folder, not the calm sweep's) has a checkpoint."""
        trials = list(self.results.glob("train_trial_*"))
        return len(trials) >= self.trials and all(any(t.glob("checkpoint_*")) for t in trials)

    def _victim(self) -> Any:
        candidates = [w for w in self.workers if runs_a_trial(w)]
        return self.rng.choice(candidates) if candidates else None

    def run(self) -> None:
        while not self._warm() and not self.done.is_set():
            time.sleep(1)
        plan = ["kill"] * self.kills + (["drain"] if self.do_drain else [])
        for what in plan:
            if self.done.wait(self.rng.uniform(*self.gap_s)):
                return
            node = self._victim()
            while node is None and not self.done.wait(1):
                node = self._victim()
            if node is None:
                return
            event = {"what": what, "node": node.node_id, "time": time.time()}
            if what == "drain":
                event["accepted"] = drain(node.node_id, self.cluster.address)
                time.sleep(3)  # the notice's lead time, then the node goes away
            kill_node(self.cluster, node)
            self.workers.remove(node)
            say(f"{'drained and killed' if what == 'drain' else 'SIGKILLed'} worker node {node.node_id[:8]}")
            self.events.append(event)
            self.workers.append(self.cluster.add_node(num_cpus=2))
            say("a replacement worker node joined")


# ------------------------------------------------------------------------------------------ checks
def checkpoint_history(result: Any) -> tuple[int, list[dict[str, float]]]:
    """(iteration, history) of a trial's final checkpoint."""
    with result.checkpoint.as_directory() as folder:
        owner = json.loads((Path(folder) / "owner.json").read_text())
        return int(owner["iteration"]), json.loads((Path(folder) / "history.json").read_text())


def check(outcome: Any, results: Any, max_t: int, every: int, uri: str) -> list[str]:
    """What failed (empty: passed)."""
    from mlflow import MlflowClient

    from tune_jobs import tracking

    problems = []
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("chaos")
    runs = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{outcome.parent_run_id}'")
    by_trial: dict[str, list] = {}
    for run in runs:
        by_trial.setdefault(run.data.tags.get(tracking.TAG_TRIAL), []).append(run)
    steps = list(range(every, max_t + 1, every))
    rows = {r.trial_id: r for r in outcome.rows}
    for result in results:
        tid = (result.metrics or {}).get("trial_id")
        row = rows[tid]
        if row.status != "completed" or row.iterations != max_t:
            problems.append(f"trial {tid} ended {row.status} at {row.iterations}")
        iteration, history = checkpoint_history(result)
        if not (iteration == max_t == int(result.metrics["iteration"])):
            problems.append(f"trial {tid}: checkpoint at {iteration}, last result {result.metrics['iteration']}")
        if row.curve != [(int(h["iteration"]), float(h["fvd"])) for h in history]:
            problems.append(f"trial {tid}: table curve {row.curve} != checkpoint history")
        if len(by_trial.get(tid, [])) != 1:
            problems.append(f"trial {tid}: {len(by_trial.get(tid, []))} MLflow runs")
            continue
        fvd = [m.step for m in client.get_metric_history(by_trial[tid][0].info.run_id, "fvd")]
        if sorted(fvd) != steps:
            problems.append(f"trial {tid}: MLflow fvd steps {sorted(fvd)} != {steps}")
        for r in outcome.restarts.get(tid, []):
            if not r["checkpoint"]:
                problems.append(f"trial {tid}: a restore found no checkpoint")
    return problems


# ------------------------------------------------------------------------------------------ main
def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    from tune_jobs.spec import parse_spec
    from tune_jobs.sweep import run_sweep
    from vidgan.ingest import ingest_sample

    scratch = Path(tempfile.mkdtemp(prefix="vgc-", dir="/tmp"))
    os.environ["RAY_TMPDIR"] = str(scratch)
    (scratch / "ray").mkdir()
    summary: dict[str, Any] = {"scratch": str(scratch)}
    # shutdown_at_exit=False: with it, add_node registers a SIGTERM handler, which fails in the Killer's thread
    # (ValueError: signal only works in main thread) and ends it after its first kill; `finally` shuts down
    cluster = Cluster(initialize_head=True, connect=True, shutdown_at_exit=False, head_node_args={
        "num_cpus": 0, "temp_dir": str(scratch / "ray"), "include_dashboard": False})
    try:
        workers = [cluster.add_node(num_cpus=2) for _ in range(args.workers)]
        cluster.wait_for_nodes()
        say(f"cluster: a head without CPUs and {args.workers} worker nodes of 2 CPUs ({scratch})")
        ingest_sample(scratch / "data", frames=16, size=32, stride=8)
        walls = {}
        for name in ("calm", "chaos"):
            spec = parse_spec(spec_dict(scratch, name, args.trials, args.max_t))
            killer = None
            if name == "chaos":
                killer = Killer(cluster, workers, args.kills, args.drain, scratch / "results" / name, args.trials,
                                (args.min_gap, args.max_gap), args.seed)
                killer.start()
            say(f"sweep {name}: {args.trials} trials to iteration {args.max_t}")
            t0 = time.monotonic()
            outcome = run_sweep(spec, name=name, verbose=0)
            walls[name] = time.monotonic() - t0
            if killer is not None:
                killer.done.set()
                killer.join(timeout=60)
                summary["events"] = killer.events
            results = list(_results(scratch / "results" / name))
            problems = check(outcome, results, args.max_t, 2, spec.mlflow.tracking_uri)
            summary[name] = {"wall_s": round(walls[name], 1), "problems": problems,
                             "restarts": outcome.restarts, "table": outcome.table}
            say(f"sweep {name}: {walls[name]:.0f} s, " + ("passed" if not problems else f"FAILED: {problems}"))
        summary["figures"] = figures(summary, walls, args)
    finally:
        ray.shutdown()
        cluster.shutdown()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return summary


def _results(path: Path) -> Any:
    from ray import tune

    from tune_jobs.sweep import train_trial

    return tune.Tuner.restore(str(path), train_trial).get_results()


def figures(summary: dict[str, Any], walls: dict[str, float], args: argparse.Namespace) -> dict[str, Any]:
    """Kills survived, iterations recomputed per kill, wall-time overhead."""
    events = summary.get("events", [])
    restarts = [r for rs in summary["chaos"]["restarts"].values() for r in rs]
    every = 2
    recomputed = []
    for r in restarts:  # iterations trained after the checkpoint it resumed from, until its node went away
        kill = next((e["time"] for e in events if e["node"] == r["lost_node"]), None)
        if kill is None or not r.get("reported_at"):
            recomputed.append(None)
            continue
        # estimated from the pace of its last result; a checkpoint at every evaluation bounds it by `every`
        recomputed.append(min(every, int(max(0.0, kill - r["reported_at"]) * r.get("iterations_per_s", 0))))
    return {
        "kills": sum(e["what"] == "kill" for e in events),
        "drains": sum(e["what"] == "drain" for e in events),
        "restarts": len(restarts),
        "causes": {c: sum(r["cause"] == c for r in restarts) for c in {r["cause"] for r in restarts}},
        "restored_from_checkpoint": sum(bool(r["checkpoint"]) for r in restarts),
        "recomputed_iterations_per_restart": recomputed,
        "checkpoint_interval": every,
        "resume_after_s": [r.get("resumed_after_s") for r in restarts],
        "overhead": round(walls["chaos"] / walls["calm"] - 1, 3),
        "wall_s": {k: round(v, 1) for k, v in walls.items()},
        "passed": not summary["calm"]["problems"] and not summary["chaos"]["problems"]
        and sum(e["what"] == "kill" for e in events) >= args.kills and (not args.drain or any(
            r["cause"] == "preempted" for r in restarts)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--max-t", type=int, default=20)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--drain", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--min-gap", type=float, default=5.0, help="seconds between faults, at least")
    p.add_argument("--max-gap", type=float, default=12.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the summary here")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = run(args)
    f = summary["figures"]
    print(json.dumps(f, indent=1))
    say(f"kills survived: {f['kills']} (+ {f['drains']} drain), restarts {f['restarts']} {f['causes']}, all from "
        f"checkpoints: {f['restored_from_checkpoint'] == f['restarts']}; iterations recomputed per restart: "
        f"{f['recomputed_iterations_per_restart']}; wall time {f['wall_s']['chaos']} s vs {f['wall_s']['calm']} s "
        f"undisturbed (overhead {f['overhead']:+.0%}) -> {'PASSED' if f['passed'] else 'FAILED'}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str))
    return 0 if f["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
