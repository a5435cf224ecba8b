"""A real `mlflow server` process for tests (SQLite store, 127.0.0.1, a free port) that they stop and start."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tune_jobs import tracking


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `mlflow server` on 127.0.0.1 with a SQLite store, which the tests stop and start again."""

    def __init__(self, root: Path, artifacts: str | None = None) -> None:
        """``artifacts``: where the server keeps (proxies) artifacts, e.g. ``s3://bucket/mlartifacts`` on the local
        S3 server (tests/s3_server.py); default a folder in ``root``."""
        self.root, self.port = root, _free_port()
        self.artifacts = artifacts or str(root / "artifacts")
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 600) -> None:
        mlflow = Path(sys.executable).parent / "mlflow"
        with open(self.root / "server.log", "a") as out:
            env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner processes
            if "AWS_ENDPOINT_URL" in os.environ:  # the server (not its clients) talks to S3, through its own variable
                env["MLFLOW_S3_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
            self.proc = subprocess.Popen(
                [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db", "--host",
                 "127.0.0.1", "--port", str(self.port), "--workers", "1", "--artifacts-destination",
                 self.artifacts],
                cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                tracking.check_health(self.uri, timeout_s=2)
                return
            except tracking.TrackingUnavailable:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.5)
        self.stop()
        raise AssertionError("mlflow server did not start: " + (self.root / "server.log").read_text()[-2000:])

    def stop(self) -> None:
        """SIGKILL the server and everything it started (its own process group)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


class Cable:
    """A TCP pass-through between MLflow clients and a :class:`Server` that the test unplugs and plugs back: while
    unplugged, connections are refused and open ones cut, as when the server's host or its network goes away
    (restarting a real server costs minutes on a loaded 2-core machine; this costs nothing)."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port, self.port = target_port, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.plug()

    def plug(self) -> None:
        import threading

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def unplug(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            # close() alone leaves the socket listening while a thread is blocked in accept() on it (Linux): the
            # next client would still get through; shutdown() wakes that accept() and stops the listening
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # unplugged meanwhile: this connection is cut too
                    for conn in (client, upstream):
                        conn.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
