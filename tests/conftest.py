"""Shared fixtures. Ray is slow to start on 2 cores: one local cluster per test module that needs it.

`make test` runs the suite on two pytest-xdist workers (``-n 2 --dist loadgroup``): every test that starts a Ray
cluster (marked ``slow``, or using a Ray fixture) joins one group, which one worker runs in order, so there is never
more than one Ray cluster at a time, while the other worker takes the tests that need no Ray.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

#: the pytest-xdist group of the tests that start Ray (one worker runs them, one after another)
RAY_GROUP = "ray"
RAY_FIXTURES = {"ray_cluster", "metrics_ray"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") or RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group(RAY_GROUP))


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster with 2 CPUs, shared by the tests of one module."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
