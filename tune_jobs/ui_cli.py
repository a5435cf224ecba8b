"""``vidgan ui [latest | NAME | RUN_ID]``: the MLflow UI on the store a sweep used, opened at the sweep's parent run.

The store is found as ``vidgan report`` finds it (``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else
``./mlflow.db``). For a local store it starts the MLflow server of this Python (``sys.executable -m mlflow``, so
PATH does not matter) on 127.0.0.1 (``--host`` to change), waits until it answers, prints the link to the sweep's
parent run in the training view and opens it in a browser (``--no-browser`` not to); Ctrl-C stops the server (its
whole process group) with one line. A port already taken is one line before anything starts. For a tracking
server there is nothing to start: the link is printed and opened. Like every command module it imports nothing
heavy at import time.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the MLflow UI's own default port (the one the links of a sweep name)
DEFAULT_PORT = 5000
#: how long the server may take to answer /health (its first start on a store migrates the database)
START_TIMEOUT_S = 600.0
#: how long the server has to stop after SIGTERM before its process group is killed
STOP_TIMEOUT_S = 20.0


def port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (another process listens there, or the address is not this
    machine's), or None. Binds with SO_REUSEADDR as servers do, so a closed connection's TIME_WAIT is no obstacle."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"--host {host}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
            probe.listen(1)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def link_host(host: str) -> str:
    """The host a browser on this machine reaches a server bound to ``host`` at (any-address binds: loopback)."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def server_command(uri: str, host: str, port: int) -> list[str]:
    """``python -m mlflow server`` of this interpreter on the SQLite store ``uri``: one worker (a person's UI), new
    experiments' artifacts in ``mlartifacts/`` next to the database, as the sweeps put theirs."""
    from tune_jobs import tracking

    root = tracking.local_artifact_root(uri)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
               "--port", str(port), "--workers", "1"]
    if root is not None:
        command += ["--artifacts-destination", root]
    return command


def can_open_browser() -> bool:
    """Whether ``webbrowser.open`` would open a window: on a desktop, or where ``$BROWSER`` says which. Without a
    display Python's webbrowser falls back to a text browser in this terminal, which would take it over."""
    return sys.platform in ("darwin", "win32") or any(os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY",
                                                                                  "BROWSER"))


def _open(url: str, browser: bool) -> None:
    if browser and can_open_browser():
        import webbrowser

        webbrowser.open(url)


def _sweep_link(uri: str, ref: str, address: str) -> tuple[str, str]:
    """(what it is, link) for the sweep ``ref`` in the store at ``uri`` served at ``address``; with no sweep in
    the store and ``ref`` latest, the UI's start page."""
    from mlflow import MlflowClient

    from tune_jobs import history

    try:
        parent = history.find_parent(MlflowClient(uri), ref)
    except history.SweepNotFound:
        if ref != "latest":
            raise
        return "No sweep in this store yet; the MLflow UI", f"{address}/#/experiments?workflowType=machine_learning"
    name = parent.data.tags.get("vidgan.sweep", parent.info.run_name)
    path = f"#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning"
    return f"Sweep {name}, parent run {parent.info.run_id}", f"{address}/{path}"


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (uvicorn and its worker), then SIGKILL what is left after a while."""
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
        try:
            os.killpg(proc.pid, 0)  # the group may outlive its leader (a worker process)
        except ProcessLookupError:
            break
    proc.poll()


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _serve(uri: str, args: argparse.Namespace) -> int:
    from tune_jobs import tracking
    from vidgan.errors import fail

    problem = port_taken(args.host, args.port)
    if problem:
        return fail("ui", f"port {args.port} on {args.host} is taken ({problem}): another MLflow UI? Pass --port N, "
                    "or open the one that runs")
    address = f"http://{link_host(args.host)}:{args.port}"
    what, url = _sweep_link(uri, args.sweep, address)
    log = Path(tempfile.gettempdir()) / f"vidgan-ui-{args.port}.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: a UI, nothing to run
    print(f"Starting the MLflow UI on {tracking.redact_uri(uri)} at {address} (its log: {log}) ...", flush=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(server_command(uri, args.host, args.port), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    # Ctrl-C stops it even where it was started with SIGINT ignored (in the background of a script), and `kill` too
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                return fail("ui", f"the MLflow server stopped (exit {proc.returncode}) before it answered: "
                            f"{_tail(log)}")
            try:
                tracking.check_health(address, timeout_s=2.0)
                break
            except tracking.TrackingUnavailable:
                if time.monotonic() > deadline:
                    _stop(proc)
                    return fail("ui", f"the MLflow server did not answer within {START_TIMEOUT_S:.0f} s; see {log}")
                time.sleep(0.5)
        print(f"{what}: {url}", flush=True)
        print("Ctrl-C stops the UI.", flush=True)
        _open(url, args.browser)
        proc.wait()
        return fail("ui", f"the MLflow server stopped (exit {proc.returncode}): {_tail(log)}")
    except KeyboardInterrupt:
        _stop(proc)
        print("\nMLflow UI stopped.", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            _stop(proc)


def _ui(args: argparse.Namespace) -> int:
    import importlib.util

    from vidgan.errors import fail

    if importlib.util.find_spec("mlflow") is None:
        return fail("ui", "mlflow not installed: pip install 'vidgan[sweep]'")
    from mlflow.exceptions import MlflowException

    from tune_jobs import history, tracking

    try:
        uri = tracking.resolve_tracking_uri(args.tracking_uri)
        if uri.startswith(("http://", "https://")):  # a tracking server serves its UI itself
            tracking.check_tracking(uri)
            what, url = _sweep_link(uri, args.sweep, tracking.ui_address(uri))
            print(f"{what}: {url}")
            _open(url, args.browser)
            return 0
        from tune_jobs.report_cli import require_store

        require_store(uri, "the UI serves a sweep's store")
        tracking.check_tracking(uri)
        return _serve(uri, args)
    except (history.SweepNotFound, tracking.TrackingUnavailable, OSError, MlflowException) as exc:
        return fail("ui", exc)
    except KeyboardInterrupt:  # before the server started
        print("\nMLflow UI not started.", flush=True)
        return 130


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="the MLflow UI on a sweep's store, opened at the sweep (Ctrl-C stops it)")
    p.add_argument("sweep", nargs="?", default="latest",
                   help="latest (default: the sweep started last), a sweep's name, or its parent run id")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--no-browser", dest="browser", action="store_false", help="print the link, open no browser")
    p.set_defaults(func=_ui)
