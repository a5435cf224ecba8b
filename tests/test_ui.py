"""``vidgan ui``: the MLflow UI of a sweep's store, started for real on a tiny SQLite store (a parent run and a trial),
its printed link fetched over HTTP, stopped with SIGINT; and the one line when the port is taken."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tune_jobs import tracking, ui_cli

#: generous: an MLflow server's first start on a store migrates it, and the machine may be busy
DEADLINE_S = 600.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    """A store holding one sweep (a parent run with the sweep's tags and one trial run): (uri, experiment, parent)."""
    root = tmp_path_factory.mktemp("ui-store")
    uri = tracking.resolve_tracking_uri(f"sqlite:///{root}/mlflow.db")
    experiment = tracking.ensure_experiment(uri, "ui-test")
    parent = tracking.start_parent_run(uri, experiment, "ui-test-1")
    tracking.find_or_create_trial_run(uri, experiment, parent, "t0", "gp-s0-t0", {tracking.TAG_VARIANT: "gp"})
    MlflowClient(uri).log_metric(parent, "sweep/best_fvd", 12.0, step=0)
    return uri, experiment, parent


def _vidgan(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, "-m", "tune_jobs.main", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _lines(proc: subprocess.Popen) -> queue.Queue:
    """Its output, line by line, read in a thread (so a wait has a deadline)."""
    out: queue.Queue = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            out.put(line)
        out.put(None)

    threading.Thread(target=read, daemon=True).start()
    return out


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.status, response.read()


@pytest.mark.slow  # starts an MLflow server: not for `make test-fast`
def test_ui_serves_the_store_prints_the_parents_link_and_stops_on_ctrl_c(store, tmp_path: Path) -> None:
    uri, experiment, parent = store
    port = _free_port()
    proc = _vidgan("ui", "--no-browser", "--port", str(port), "--tracking-uri", uri, cwd=tmp_path)
    lines = _lines(proc)
    seen: list[str] = []
    link = None
    try:
        deadline = time.monotonic() + DEADLINE_S
        while link is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=5)
            except queue.Empty:
                continue
            assert line is not None, "vidgan ui ended before printing the link:\n" + "".join(seen)
            seen.append(line)
            if "#/experiments/" in line:
                link = line.split(": ", 1)[1].strip()
        assert link == (f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs/{parent}"
                        "?workflowType=machine_learning"), "".join(seen)
        assert "Sweep ui-test-1" in seen[-1]
        # the page answers, and the server's REST API shows the parent run of that store
        status, page = _get(link.split("#")[0])
        assert status == 200 and b"<html" in page.lower()
        status, body = _get(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={parent}")
        run = json.loads(body)["run"]
        assert status == 200 and {"key": "vidgan.kind", "value": "sweep"} in run["data"]["tags"]

        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        rest = []
        while (line := lines.get(timeout=DEADLINE_S)) is not None:
            rest.append(line)
        assert proc.wait(timeout=DEADLINE_S) == 0
        assert [line for line in rest if line.strip()][-2:] == ["Ctrl-C stops the UI.\n", "MLflow UI stopped.\n"], rest
        # the server is gone with it: the port is free again
        assert ui_cli.port_taken("127.0.0.1", port) is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ui_says_so_in_one_line_when_the_port_is_taken(store, tmp_path: Path) -> None:
    uri = store[0]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = _vidgan("ui", "--no-browser", "--port", str(port), "--tracking-uri", uri, cwd=tmp_path)
        out, _ = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode != 0
    (line,) = out.strip().splitlines()
    assert line.startswith(f"vidgan ui: error: port {port} on 127.0.0.1 is taken") and "--port" in line


def test_ui_without_a_store_is_one_line(tmp_path: Path) -> None:
    proc = _vidgan("ui", "--no-browser", cwd=tmp_path)  # no mlflow.db here: none is made
    out, _ = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 2 and out.strip().startswith("vidgan ui: error: no MLflow store at sqlite:///")
    assert len(out.strip().splitlines()) == 1 and not (tmp_path / "mlflow.db").exists()


def test_ui_helpers() -> None:
    assert ui_cli.link_host("0.0.0.0") == "127.0.0.1" and ui_cli.link_host("::1") == "[::1]"
    command = ui_cli.server_command("sqlite:////srv/x/mlflow.db", "127.0.0.1", 5001)
    assert command[:4] == [sys.executable, "-m", "mlflow", "server"]  # this Python's MLflow, whatever PATH says
    assert command[command.index("--port") + 1] == "5001"
    assert command[command.index("--artifacts-destination") + 1] == "file:///srv/x/mlartifacts"
