"""Ray's fake multi-node provider, with one fix for jobs that ship a working directory.

Ray's ``FakeMultiNodeProvider`` (``provider.type: fake_multinode``) starts every fake worker node
with the head's session folder, so all nodes share ``<session>/runtime_resources``. When a node
first needs a job's ``working_dir`` (``ray job submit --working-dir .``), its runtime-env agent
deletes and re-extracts ``runtime_resources/working_dir_files/_ray_pkg_<hash>`` (it unpacks with
``overwrite=True``), pulling the directory from under the job driver and the trials already running
in it on other nodes: they fail with ``FileNotFoundError`` from ``os.getcwd()``. Real nodes have
their own disks, so this only happens in the fake cluster (measured with Ray 2.60).

This provider gives each fake worker node its own runtime-env folder
(``runtime_resources_<node id suffix>``) and is otherwise Ray's provider unchanged. It is loaded
by the autoscaler through ``provider: {type: external, module: cluster.fake_provider.
FakeMultiNodeProvider}`` (cluster/fake_multinode.yaml), with the repository on PYTHONPATH.
"""

from __future__ import annotations

from typing import Any

import ray._private.node
from ray.autoscaler._private.fake_multi_node import node_provider as _ray_fake

_RayNode = ray._private.node.Node


class _NodeWithOwnRuntimeEnvDir(_RayNode):  # type: ignore[misc, valid-type]
    def __init__(self, ray_params: Any, head: bool = False, **kwargs: Any) -> None:
        node_id = (ray_params.env_vars or {}).get("RAY_OVERRIDE_NODE_ID_FOR_TESTING", "")
        if not head and node_id:
            ray_params.runtime_env_dir_name = f"runtime_resources_{node_id[-5:]}"
        super().__init__(ray_params, head=head, **kwargs)


class FakeMultiNodeProvider(_ray_fake.FakeMultiNodeProvider):
    """``fake_multinode`` with a runtime-env folder per fake node."""

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):  # noqa: ANN001
        with self.lock:
            ray._private.node.Node = _NodeWithOwnRuntimeEnvDir
            try:
                return super()._create_node_with_resources_and_labels(node_config, tags, count, resources, labels)
            finally:
                ray._private.node.Node = _RayNode
