"""A real S3 API on localhost for the tests: moto's server (cluster/local_s3.py), never the internet. One server per
test process, started on a free port by the ``s3_server`` fixture and stopped by its PID; ``AWS_ENDPOINT_URL`` and a
dummy key pair point boto3, pyarrow (hence Ray Tune and Ray Data) and subprocesses at it.

    def test_x(s3_bucket):          # a fresh, empty bucket: "s3://vidgan-test-<pid>-<n>"
        ingest(..., out=f"{s3_bucket}/data")
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from cluster import local_s3

_buckets = itertools.count()
make_bucket = local_s3.make_bucket
list_keys = local_s3.list_keys


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a moto S3 server on localhost, with the environment pointing at it (and restored)."""
    try:
        proc, endpoint = local_s3.start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    except RuntimeError as e:
        pytest.fail(str(e))
    env = local_s3.s3_env(endpoint)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        local_s3.stop(proc)


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A new empty bucket on the local S3 server: ``s3://vidgan-test-<pid>-<n>``."""
    return make_bucket(f"vidgan-test-{os.getpid()}-{next(_buckets)}")
