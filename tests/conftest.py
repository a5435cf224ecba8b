"""Shared fixtures. Ray is slow to start on 2 cores: one local cluster per test module that needs it.

`make test` runs the suite on two pytest-xdist workers, a module at a time each (``-n 2 --dist loadfile
--no-loadscope-reorder``): a module is never split (so its Ray cluster starts once, and at most two run at a
time), and the longest modules go first, in the order of :data:`LONGEST_FIRST`, so that the two workers start
on them and the short modules fill in beside them.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
#: Ray's raylet starts its workers (the trials) at nice 15, so that a laptop stays responsive; in the suite that
#: starves them whenever the other pytest worker, or anything else at nice 0, keeps both cores busy, and an end-to-end
#: test then waits minutes on trials that get no CPU. Every Ray cluster the tests start (in this process or in a
#: child, which inherits the environment) runs its workers at the suite's own priority.
os.environ.setdefault("RAY_worker_niceness", "0")

#: fixtures of a local S3 API (moto): s3_server, s3_bucket
pytest_plugins = ["s3_server"]

#: modules by their time alone on 2 cores, longest first (xdist hands each worker the next module in this order, and
#: one more: a short module third keeps the first worker free for the longest one)
LONGEST_FIRST = ("test_sweep_e2e.py", "test_rehearsal.py", "test_cluster_config.py", "test_tracking_outage.py",
                 "test_node_loss.py", "test_learning.py", "test_s3_ray.py", "test_data_ray.py", "test_hostile.py",
                 "test_mlflow_ui.py", "test_probe_failures.py", "test_metrics.py", "test_spool.py", "test_ui.py",
                 "test_probe_losses.py", "test_s3.py")


#: fixtures that start a server: a test using one (directly or through another fixture) is marked slow, so that
#: `make test-fast` (-m "not slow") leaves it out; modules that start Ray or a server of their own mark themselves
SERVER_FIXTURES = frozenset({"ray_cluster", "s3_server"})


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by -m
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module's own order kept


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster with 2 CPUs, shared by the tests of one module."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
