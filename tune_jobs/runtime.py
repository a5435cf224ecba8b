"""What a sweep needs from the Ray it runs on: the same Python minor everywhere, and how many GPUs a trial gets.

* :func:`check_cluster_python`: Ray pickles functions and objects between the driver and the workers, so
  both must run the same Python minor (the cluster image is py311). Ray itself compares the driver with
  the head when it connects (to the patch level by default); we let it compare minors only and ask every
  live node, through a tiny task each, and turn a mismatch into one line.
* :func:`resolve_gpu`: ``resources.gpu: auto`` becomes 0 when Ray sees no GPU, else 1 per trial, or an
  equal share of one GPU when ``max_concurrent_trials`` trials would not each get a whole one.
* :func:`local_gpus`: the GPUs a local Ray would see (for the plan printed before Ray starts).
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tune_jobs.spec import SweepSpec

log = logging.getLogger(__name__)


class ClusterMismatch(RuntimeError):
    """The Ray cluster cannot run this driver's sweep (nothing answers at its address, another Python minor,
    another Ray); one line."""


def _python_version() -> tuple[int, int, int]:
    return sys.version_info[:3]


def _fmt(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)


def mismatch_message(driver: tuple[int, ...], nodes: dict[str, tuple[int, ...]]) -> str | None:
    """One line naming the nodes whose Python minor differs from the driver's, or None when all match."""
    bad = {node: v for node, v in nodes.items() if tuple(v[:2]) != tuple(driver[:2])}
    if not bad:
        return None
    found = ", ".join(f"{_fmt(v)} on {node}" for node, v in sorted(bad.items()))
    return (
        f"this driver runs Python {_fmt(driver)} but the Ray cluster runs Python {found}: Ray needs the same "
        f"Python minor on the driver and every worker; run `vidgan sweep` from a Python "
        f"{_fmt(next(iter(bad.values()))[:2])} environment (the cluster image is py311), or submit it as a job "
        "(`ray job submit ... -- vidgan sweep ...`), which runs the driver on the head"
    )


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Raise :class:`ClusterMismatch` when nothing listens at a ``host:port`` (or ``ray://host:port``)
    address: ``ray.init`` itself retries such an address for minutes. ``auto`` and other forms are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()  # [::1]:6379 too
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterMismatch(
            f"no Ray cluster answers at {address} ({reason}): start one (`ray start --head`, or `ray up "
            "cluster.yaml`) or pass its head's address; on a node of the cluster, --address auto finds it"
        ) from None


def connect(address: str | None, **kwargs: Any) -> None:
    """``ray.init``; with an ``address``, it is checked to answer first (:func:`check_reachable`), Python
    minors are compared (not patch levels) and a mismatch Ray detects on connect becomes a :class:`ClusterMismatch`."""
    import ray

    if address is not None:
        check_reachable(address)
        os.environ.setdefault("RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL", "minor")
    try:
        ray.init(address=address, **kwargs)
    except RuntimeError as exc:
        text = str(exc)
        if not text.startswith("Version mismatch"):
            raise
        cluster = re.search(r"started with:\s+Ray: (\S+)\s+Python: (\S+)", text)
        if cluster is None:  # pragma: no cover - Ray changed its message
            raise ClusterMismatch(" ".join(text.split())) from None
        ray_version, python = cluster.groups()
        version = tuple(int(p) for p in python.split(".")[:3])
        import ray as _ray

        if ray_version != _ray.__version__:
            raise ClusterMismatch(
                f"the Ray cluster at {address} runs Ray {ray_version} (Python {python}), this driver Ray "
                f"{_ray.__version__}: install the cluster's Ray version"
            ) from None
        message = mismatch_message(_python_version(), {f"the head ({address})": version})
        raise ClusterMismatch(message or " ".join(text.split())) from None


def node_pythons(timeout_s: float = 120.0) -> dict[str, tuple[int, int, int]]:
    """The Python version of every live node, asked through a zero-CPU task pinned to each node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def version() -> tuple[int, int, int]:
        import sys

        return tuple(sys.version_info[:3])

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    refs = {
        n.get("NodeManagerAddress", n["NodeID"][:8]) + f" ({n['NodeID'][:8]})": version.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote()
        for n in nodes
    }
    values = ray.get(list(refs.values()), timeout=timeout_s)
    return {name: tuple(v) for name, v in zip(refs, values, strict=True)}


def check_cluster_python(driver: tuple[int, ...] | None = None) -> dict[str, tuple[int, int, int]]:
    """Raise :class:`ClusterMismatch` when a live node runs another Python minor than ``driver`` (default:
    this process); return the nodes' versions."""
    nodes = node_pythons()
    message = mismatch_message(driver or _python_version(), nodes)
    if message:
        raise ClusterMismatch(message)
    return nodes


# ------------------------------------------------------------------------------------------ GPUs


def local_gpus() -> int:
    """GPUs a Ray started on this machine would see (CUDA devices visible to this process)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_per_trial(total_gpus: float, max_concurrent_trials: int | None) -> float:
    """``resources.gpu: auto``: 0 without GPUs; else 1 per trial, or 1/k of a GPU so that
    ``max_concurrent_trials`` trials fit on the GPUs there are."""
    if total_gpus < 1:
        return 0.0
    if not max_concurrent_trials or max_concurrent_trials <= total_gpus:
        return 1.0
    return 1.0 / math.ceil(max_concurrent_trials / int(total_gpus))


def resolve_gpu(spec: SweepSpec, total_gpus: float) -> SweepSpec:
    """The spec with ``resources.gpu: auto`` replaced by a number for ``total_gpus``; others unchanged."""
    if spec.resources.gpu != "auto":
        return spec
    gpu = gpu_per_trial(total_gpus, spec.max_concurrent_trials)
    resources = spec.resources.model_copy(update={"gpu": gpu})
    return spec.model_copy(update={"resources": resources})


def describe_gpu(gpu: float, total_gpus: float, auto: bool) -> str:
    """One phrase: what the trials use, e.g. 'GPU: 0.5 per trial of 1 (auto)' or 'no GPU: CPU trials'."""
    how = " (resources.gpu: auto)" if auto else ""
    if gpu == 0:
        seen = "no GPU seen" if total_gpus == 0 else f"{total_gpus:g} GPU(s) seen, none asked"
        return f"CPU trials, {seen}{how}"
    share = "1 GPU" if gpu == 1 else f"{gpu:g} of a GPU" if gpu < 1 else f"{gpu:g} GPUs"
    return f"{share} per trial, {total_gpus:g} GPU(s) seen{how}"
