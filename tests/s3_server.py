"""A real S3 API on localhost for the tests: moto's server (``moto[server]``, pinned in constraints.txt), never the
internet. One server per test process, started on a free port by the ``s3_server`` fixture and stopped by its PID;
``AWS_ENDPOINT_URL`` and a dummy key pair point boto3, pyarrow (hence Ray Tune and Ray Data) and subprocesses at it.

    def test_x(s3_bucket):          # a fresh, empty bucket: "s3://vidgan-test-<n>"
        ingest(..., out=f"{s3_bucket}/data")
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}
_buckets = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(log: Path, deadline_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start ``moto_server`` on a free localhost port; (process, endpoint URL) once it answers HTTP."""
    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
    if exe is None:
        pytest.fail("moto_server is not installed: `make test` installs moto[server] (the dev extra)")
    port = free_port()
    out = open(log, "wb")  # noqa: SIM115 - the server's log, closed with the server
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + deadline_s  # a generous bound: only a server that never starts reaches it
    while True:
        try:
            urllib.request.urlopen(endpoint + "/", timeout=5).close()
            return proc, endpoint
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start (see {log})")
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a moto S3 server on localhost, with the environment pointing at it (and restored)."""
    proc, endpoint = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, AWS_ENDPOINT_URL=endpoint)
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop(proc)


def make_bucket(name: str) -> str:
    import boto3

    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A new empty bucket on the local S3 server: ``s3://vidgan-test-<pid>-<n>``."""
    return make_bucket(f"vidgan-test-{os.getpid()}-{next(_buckets)}")
