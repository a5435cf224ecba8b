"""Load on the MLflow tracking server: N simulated trials against a real ``mlflow server``, SQLite vs PostgreSQL.

Each simulated trial does what a sweep's trial does to MLflow (tune_jobs/tracking.py): at its start a nested
run with its tags and ~40 parameters; at every evaluation a metrics batch (25 metrics), the samples image
(``log_image``), the GIF and MP4 of the sample grid and the FVD curve PNG as artifacts (proxied through the
server, as on the cluster), and its description (a tag); between them MLflow's system metrics every 10 s (a
batch of 12). Trials start spread over the first evaluation interval. The trials run as threads in a few client
processes (MLflow's client, one ``MlflowClient`` per trial).

For each store it starts the server itself (SQLite: a file in a temporary folder; PostgreSQL: Debian's
PostgreSQL 15 started with ``initdb``/``pg_ctl`` as the user ``nobody`` in a temporary folder, never a system
service), runs N = 8, 32, 128 trials for ``--seconds`` each, stops everything it started and prints requests/s,
p50/p99 latency and errors per store and N::

    .venv/bin/python benchmarks/tracking_load.py                       # both stores, N = 8 32 128, 120 s each
    .venv/bin/python benchmarks/tracking_load.py --stores sqlite --n 8 --seconds 20   # a quick look

An error is a request that raised (MLflow's client retries 5xx and connection errors itself, for minutes: one
that still fails, or takes longer than ``--timeout`` s, counts). Needs the ``[postgres]`` extra for PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import pwd
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "nobody"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering {url}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process group we started (the server and its workers)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def postgres(folder: Path) -> Iterator[str]:
    """A PostgreSQL 15 cluster in ``folder``, run as ``nobody`` (initdb refuses root); yields its SQLAlchemy URI."""
    uid = pwd.getpwnam(PG_USER).pw_uid
    data, sock = folder / "pgdata", folder / "pgsock"
    os.chmod(folder.parent, 0o711)  # a private temporary folder: nobody may pass through it, not list it
    for d in (folder, sock):
        d.mkdir(exist_ok=True)
        os.chown(d, uid, -1)
    as_pg = ["runuser", "-u", PG_USER, "--"] if os.getuid() == 0 else []
    init = subprocess.run([*as_pg, str(PG_BIN / "initdb"), "-D", str(data), "-U", "mlflow", "-A", "trust",
                           "-E", "UTF8"], capture_output=True, text=True)
    if init.returncode:
        raise RuntimeError(f"initdb failed: {init.stderr.strip()[-500:]}")
    port = free_port()
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=500 -c fsync=on"
    subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(folder / "pg.log"),
                    "-w", "start"], check=True, capture_output=True)
    try:
        subprocess.run([*as_pg, str(PG_BIN / "createdb") if (PG_BIN / "createdb").exists() else "createdb",
                        "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"], check=True, capture_output=True)
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"  # psycopg2: the [postgres] extra
    finally:
        subprocess.run([*as_pg, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)


@contextlib.contextmanager
def mlflow_server(store: str, folder: Path, workers: int) -> Iterator[str]:
    """``mlflow server`` on ``store`` with proxied artifacts in ``folder``; yields its URL; stops it after."""
    port = free_port()
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed below
    env = {**os.environ, "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "20", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "40"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--artifacts-destination",
         str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(url + "/health", 600, proc)
        except RuntimeError:
            log.flush()
            tail = (folder / "server.log").read_text(errors="replace").strip().splitlines()[-15:]
            raise RuntimeError("mlflow server did not start; its log ends:\n" + "\n".join(tail)) from None
        yield url
    finally:
        stop(proc)
        log.close()


# ------------------------------------------------------------------------------------------ the trials


def _payloads(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {"gif": rng.randbytes(300_000), "mp4": rng.randbytes(120_000), "png": rng.randbytes(40_000)}


def trial(url: str, experiment_id: str, parent: str, index: int, seconds: float, eval_every: float,
          sys_every: float, timeout: float, out: list, stop_at: float) -> None:
    """One simulated trial: its run, then evaluations every ``eval_every`` s and system metrics every ``sys_every``
    s until ``stop_at``; appends (kind, seconds, error or None) for every request to ``out``."""
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(url)
    rng = random.Random(index)
    folder = Path(tempfile.mkdtemp(prefix=f"trial{index}-"))
    files = {}
    for kind, data in _payloads(index).items():
        files[kind] = folder / f"samples.{kind}"
        files[kind].write_bytes(data)
    image = np.random.default_rng(index).integers(0, 255, (4 * 65, 16 * 65, 3), dtype=np.uint8)

    def call(kind: str, fn) -> object:
        t = time.perf_counter()
        try:
            result = fn()
            elapsed = time.perf_counter() - t
            out.append((kind, elapsed, None if elapsed <= timeout else f"slower than {timeout:g} s"))
            return result
        except Exception as exc:  # noqa: BLE001 - counted
            out.append((kind, time.perf_counter() - t, f"{type(exc).__name__}: {str(exc)[:120]}"))
            return None

    time.sleep(rng.uniform(0, eval_every))  # trials start spread over the first interval
    run = call("create_run", lambda: client.create_run(
        experiment_id, run_name=f"trial-{index}",
        tags={"mlflow.parentRunId": parent, "vidgan.trial_id": f"t{index:04d}", "vidgan.kind": "trial"}))
    if run is None:
        return
    run_id = run.info.run_id
    params = [Param(f"train.p{i}", str(rng.random())) for i in range(40)]
    call("log_params", lambda: client.log_batch(run_id, params=params))
    step, next_eval, next_sys = 0, time.monotonic() + eval_every, time.monotonic() + sys_every
    while time.monotonic() < stop_at:
        now = time.monotonic()
        if now >= next_sys:
            ms = int(time.time() * 1000)
            system = [Metric(f"system/m{i}", rng.random(), ms, 0) for i in range(12)]
            call("system_metrics", lambda m=system: client.log_batch(run_id, metrics=m))
            next_sys += sys_every
        if now >= next_eval:
            step += 10
            ms = int(time.time() * 1000)
            metrics = [Metric(f"loss/m{i}", rng.random(), ms, step) for i in range(25)]
            call("metrics", lambda m=metrics: client.log_batch(run_id, metrics=m))
            call("image", lambda s=step: client.log_image(run_id, image, key="samples", step=s))
            call("gif", lambda: client.log_artifact(run_id, str(files["gif"]), "samples"))
            call("mp4", lambda: client.log_artifact(run_id, str(files["mp4"]), "samples"))
            call("figure", lambda: client.log_artifact(run_id, str(files["png"])))
            note = f"Trial {index} running, iteration {step}. " + "x" * 800
            call("description", lambda n=note: client.log_batch(run_id, tags=[RunTag("mlflow.note.content", n)]))
            next_eval += eval_every
        time.sleep(max(0.0, min(next_eval, next_sys, stop_at) - time.monotonic()))
    call("finish", lambda: client.set_terminated(run_id, "FINISHED"))
    shutil.rmtree(folder, ignore_errors=True)


def client_process(url: str, experiment_id: str, parent: str, indices: list[int], args: dict, ready: mp.Queue,
                   go: mp.Event, start: mp.Value, queue: mp.Queue) -> None:
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - MLflow prints a link for every run it ends
    import mlflow  # noqa: F401 - imported before the clock starts

    ready.put(os.getpid())
    go.wait()
    stop_at = time.monotonic() + args["seconds"] - (time.time() - start.value)
    out: list = []
    threads = [threading.Thread(target=trial, args=(url, experiment_id, parent, i, args["seconds"],
                                                    args["eval_every"], args["sys_every"], args["timeout"], out,
                                                    stop_at), daemon=True) for i in indices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, stop_at - time.monotonic() + args["timeout"] + 60))
    queue.put(list(out))


def load(url: str, n: int, args: argparse.Namespace) -> dict:
    """Run ``n`` simulated trials for ``args.seconds``; the figures of that run."""
    from mlflow import MlflowClient

    client = MlflowClient(url)
    experiment_id = client.create_experiment(f"load-{n}-{time.time_ns()}")
    parent = client.create_run(experiment_id, run_name=f"sweep-{n}").info.run_id
    procs_n = min(args.processes, n)
    groups = [list(range(i, n, procs_n)) for i in range(procs_n)]
    ctx = mp.get_context("spawn")
    queue, ready, go, begin = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    procs = [ctx.Process(target=client_process, args=(url, experiment_id, parent, g, vars(args), ready, go, begin,
                                                      queue)) for g in groups]
    for p in procs:
        p.start()
    for _ in procs:  # every client has imported MLflow: the clock starts now, for all of them
        ready.get(timeout=600)
    begin.value = time.time()
    start = time.monotonic()
    go.set()
    records: list = []
    for _ in procs:
        records += queue.get(timeout=args.seconds + args.timeout + 600)
    for p in procs:
        p.join(30)
    wall = time.monotonic() - start
    lat = sorted(r[1] for r in records)
    errors = [r for r in records if r[2] is not None]
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else [float("nan")] * 99
    return {"n": n, "requests": len(records), "per_s": len(records) / wall, "p50_ms": 1000 * q[49],
            "p99_ms": 1000 * q[98], "max_ms": 1000 * (lat[-1] if lat else float("nan")), "errors": len(errors),
            "first_errors": sorted({e[2] for e in errors})[:3]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stores", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    p.add_argument("--n", nargs="+", type=int, default=[8, 32, 128], help="simulated trials")
    p.add_argument("--seconds", type=float, default=120, help="how long each N runs")
    p.add_argument("--eval-every", type=float, default=20, help="seconds between a trial's evaluations")
    p.add_argument("--sys-every", type=float, default=10, help="seconds between system-metrics batches")
    p.add_argument("--timeout", type=float, default=30, help="a request slower than this counts as an error")
    p.add_argument("--processes", type=int, default=4, help="client processes the trials are spread over")
    p.add_argument("--workers", type=int, default=4, help="mlflow server --workers")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args()

    rows = []
    for store in args.stores:
        with tempfile.TemporaryDirectory(prefix=f"vidgan-load-{store}-") as tmp:
            folder = Path(tmp)
            with contextlib.ExitStack() as stack:
                if store == "sqlite":
                    uri = f"sqlite:///{folder}/mlflow.db"
                else:
                    uri = stack.enter_context(postgres(folder / "pg"))
                t = time.monotonic()
                url = stack.enter_context(mlflow_server(uri, folder, args.workers))
                print(f"[{store}] mlflow server up in {time.monotonic() - t:.0f} s at {url}", flush=True)
                for n in args.n:
                    row = {"store": store, **load(url, n, args)}
                    rows.append(row)
                    print(f"[{store}] N={n}: {row['requests']} requests, {row['per_s']:.1f}/s, p50 "
                          f"{row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms, errors {row['errors']} "
                          f"{row['first_errors'] or ''}", flush=True)
    print(f"\n{len(args.n)} loads of {args.seconds:g} s: an evaluation every {args.eval_every:g} s per trial "
          f"(metrics, image, GIF {300} KB, MP4 {120} KB, PNG {40} KB, description), system metrics every "
          f"{args.sys_every:g} s; mlflow server --workers {args.workers}\n")
    print("| store | N trials | requests | requests/s | p50 ms | p99 ms | max ms | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['store']} | {r['n']} | {r['requests']} | {r['per_s']:.1f} | {r['p50_ms']:.0f} | "
              f"{r['p99_ms']:.0f} | {r['max_ms']:.0f} | {r['errors']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
