"""A real S3 API on this machine: moto's server (``moto[server]``, the dev extra) on a free localhost port, for the
cluster rehearsal (`make rehearse`) and the tests. Nothing here reaches the internet.

    proc, endpoint = start_moto(Path("moto.log"))
    env = {**os.environ, **s3_env(endpoint)}   # boto3, pyarrow (Ray Tune, Ray Data) and MLflow's server use it
    make_bucket("vidgan-rehearsal", endpoint)
    ...
    stop(proc)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

#: a dummy key pair: moto accepts any, and the AWS clients insist on one
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_env(endpoint: str) -> dict[str, str]:
    """The environment that points boto3, pyarrow and an MLflow server (``MLFLOW_S3_ENDPOINT_URL``) at ``endpoint``."""
    return {**S3_ENV, "AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint}


def start_moto(log: Path, env: dict[str, str] | None = None, deadline_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Start ``moto_server`` on 127.0.0.1 and a free port in its own process group; (process, endpoint URL) once it
    answers HTTP. RuntimeError when it is not installed or does not start within ``deadline_s`` (only a broken
    install takes that long)."""
    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
    if exe is None:
        raise RuntimeError("moto_server is not installed: `make setup` installs moto[server] (the dev extra)")
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            urllib.request.urlopen(endpoint + "/", timeout=5).close()
            return proc, endpoint
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError(f"moto_server did not start (see {log})") from None
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    """Stop the server's process group: SIGTERM, then SIGKILL after 30 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def client(endpoint: str | None = None):  # noqa: ANN201 - a boto3 S3 client
    """A boto3 S3 client for ``endpoint`` with the dummy key pair, or from the environment when None."""
    import boto3

    if endpoint is None:
        return boto3.client("s3")
    return boto3.client("s3", endpoint_url=endpoint, region_name=S3_ENV["AWS_DEFAULT_REGION"],
                        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"])


def make_bucket(name: str, endpoint: str | None = None) -> str:
    """Create a bucket; returns ``s3://name``."""
    client(endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


def list_keys(bucket: str, endpoint: str | None = None) -> list[str]:
    """Every key of a bucket (``s3://name`` or ``name``)."""
    pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket.removeprefix("s3://"))
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
