"""Offline checks of cluster.yaml and the rehearsal config with Ray's own schema validation."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER_YAML = REPO / "cluster.yaml"
FAKE_YAML = REPO / "cluster" / "fake_multinode.yaml"


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def prepared() -> dict[str, Any]:
    """cluster.yaml merged with Ray's AWS defaults and validated, as `ray up` does before any AWS call."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(load(CLUSTER_YAML))
    validate_config(config)
    return config


def test_cluster_yaml_passes_ray_schema(prepared: dict[str, Any]) -> None:
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_schema_validation_rejects_broken_config() -> None:
    """The validation used above is not vacuous: Ray refuses unknown keys and bad node types."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = load(CLUSTER_YAML)
    bad["not_a_ray_key"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))
    bad = load(CLUSTER_YAML)
    bad["head_node_type"] = "missing"
    with pytest.raises(ValueError):
        validate_config(prepare_config(bad))


def test_head_takes_no_trials_and_gpu_workers_autoscale(prepared: dict[str, Any]) -> None:
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"] == {"CPU": 0, "GPU": 0}
    assert head["max_workers"] == 0
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))  # no GPU instance
    workers = {name: t for name, t in types.items() if name != prepared["head_node_type"]}
    instance_types = {t["node_config"]["InstanceType"] for t in workers.values()}
    assert {"g5.xlarge", "g5.12xlarge"} <= instance_types
    assert all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in workers.values())
    assert any(t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot" for t in workers.values())
    # the head's start command also declares no CPUs/GPUs to Ray
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "--num-cpus=0" in head_start and "--num-gpus=0" in head_start


def test_image_matches_installed_ray() -> None:
    import ray

    docker = load(CLUSTER_YAML)["docker"]
    assert docker["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert docker["head_image"] == f"rayproject/ray:{ray.__version__}-py311-cpu"
    setup = " ".join(load(CLUSTER_YAML)["setup_commands"])
    assert "pip install" in setup and "~/vidgan" in setup


def test_secure_defaults(prepared: dict[str, Any]) -> None:
    raw = CLUSTER_YAML.read_text()
    # token authentication on every node, token shipped from the user's machine, not the repo
    assert "--env RAY_AUTH_MODE=token" in prepared["docker"]["run_options"]
    for cmd in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("RAY_AUTH_MODE=token" in c and "ray start" in c for c in prepared[cmd]), cmd
    assert prepared["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    # dashboard + job API on localhost only (reached through `ray dashboard` port forwarding)
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start.split("mlflow")[0]
    # Prometheus and Grafana on localhost only
    assert "--web.listen-address=127.0.0.1:9090" in head_start
    assert "GF_SERVER_HTTP_ADDR=127.0.0.1" in head_start
    # inbound from the internet: SSH only
    perms = prepared["provider"]["security_group"]["IpPermissions"]
    assert [(p["FromPort"], p["ToPort"]) for p in perms] == [(22, 22)]
    # no credentials in the file: instance profiles only
    assert not re.search(r"AKIA[0-9A-Z]{16}", raw)
    assert not re.search(r"aws_(secret_)?access_key|AWS_SECRET|AWS_ACCESS", raw, re.IGNORECASE)
    for name, node_type in prepared["available_node_types"].items():
        assert node_type["node_config"]["IamInstanceProfile"]["Name"], name
        assert node_type["node_config"]["MetadataOptions"]["HttpTokens"] == "required", name


def test_mlflow_server_proxies_artifacts_to_s3(prepared: dict[str, Any]) -> None:
    head_start = " ".join(prepared["head_start_ray_commands"])
    mlflow = next(c for c in prepared["head_start_ray_commands"] if "mlflow server --" in c)
    assert "--backend-store-uri sqlite:////" in mlflow
    assert re.search(r"--artifacts-destination s3://\S+", mlflow)
    assert "--serve-artifacts" in mlflow
    # the job driver on the head and trials on workers find the tracking server
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in head_start
    assert any("MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in c for c in prepared["worker_start_ray_commands"])


def test_dashboard_provisioning_is_installed_on_head(prepared: dict[str, Any]) -> None:
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "dashboards/provisioning/vidgan.yml" in head_start
    assert (REPO / "dashboards" / "provisioning" / "vidgan.yml").exists()


def test_fake_multinode_config_is_complete_and_valid() -> None:
    """The autoscaler reads this file as is (no defaults merged), so Ray's schema must accept it raw."""
    from ray.autoscaler._private.util import validate_config

    config = load(FAKE_YAML)
    validate_config(copy.deepcopy(config))
    assert config["head_node_type"] == "ray.head.default"  # the id the fake provider gives the head
    assert config["available_node_types"]["ray.head.default"]["resources"] == {"CPU": 0, "GPU": 0}
    workers = [t for n, t in config["available_node_types"].items() if n != "ray.head.default"]
    assert workers and all(t["resources"]["GPU"] >= 1 and t["min_workers"] == 0 for t in workers)
    port = int(config["provider"]["gcs_address"].rsplit(":", 1)[1])
    assert port != 6379  # never the default port other local clusters use
    assert config["provider"]["disable_node_updaters"] is True


def test_fake_provider_is_rays_fake_multinode_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO))  # the autoscaler gets the repository on PYTHONPATH
    from ray._common.utils import load_class
    from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

    provider = load(FAKE_YAML)["provider"]
    assert provider["type"] == "external"
    assert issubclass(load_class(provider["module"]), FakeMultiNodeProvider)
