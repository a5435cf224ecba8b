"""Offline checks of cluster.yaml and the rehearsal config with Ray's own schema validation.

Nothing here talks to AWS. The safe-by-default checks (security group, instance profiles, MLflow
auth and address, database backup, pinned download sums) each fail on the cluster.yaml of commit
81a397a; point VIDGAN_CLUSTER_YAML at another file to check that one instead.
"""

from __future__ import annotations

import configparser
import copy
import hashlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER_YAML = Path(os.environ.get("VIDGAN_CLUSTER_YAML", REPO / "cluster.yaml"))
FAKE_YAML = REPO / "cluster" / "fake_multinode.yaml"
HEAD_POLICY = REPO / "cluster" / "iam-head-policy.json"
WORKER_POLICY = REPO / "cluster" / "iam-worker-policy.json"
INSTALL_METRICS = REPO / "cluster" / "install_metrics.sh"
MLFLOW_DB = REPO / "cluster" / "mlflow_db.py"


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def commands(config: dict[str, Any]) -> list[str]:
    """Every shell command cluster.yaml runs on a node."""
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")  # fmt: skip
    return [c for k in keys for c in config.get(k) or []]


def mlflow_server_command(config: dict[str, Any]) -> str:
    return next(c for c in config["head_start_ray_commands"] if "mlflow server " in c)


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
    assert "vidgan[sweep" in setup and "-c ~/vidgan/constraints.txt" in setup  # Tune/MLflow are in the extra


def test_secure_defaults(prepared: dict[str, Any]) -> None:
    raw = CLUSTER_YAML.read_text()
    # token authentication on every node, token shipped from the user's machine, not the repo
    assert "--env RAY_AUTH_MODE=token" in prepared["docker"]["run_options"]
    for cmd in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert any("RAY_AUTH_MODE=token" in c and "ray start" in c for c in prepared[cmd]), cmd
    assert prepared["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    # dashboard + job API on localhost only (reached through `ray dashboard` port forwarding)
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    # Prometheus and Grafana on localhost only
    assert "--web.listen-address=127.0.0.1:9090" in head_start
    assert "GF_SERVER_HTTP_ADDR=127.0.0.1" in head_start
    # no credentials in the file: instance profiles only
    assert not re.search(r"AKIA[0-9A-Z]{16}", raw)
    assert not re.search(r"aws_(secret_)?access_key|AWS_SECRET|AWS_ACCESS", raw, re.IGNORECASE)
    for name, node_type in prepared["available_node_types"].items():
        assert node_type["node_config"]["IamInstanceProfile"]["Name"], name
        assert node_type["node_config"]["MetadataOptions"]["HttpTokens"] == "required", name


def test_mlflow_server_proxies_artifacts_to_s3(prepared: dict[str, Any]) -> None:
    mlflow = mlflow_server_command(prepared)
    assert "--backend-store-uri sqlite:////" in mlflow
    assert re.search(r"--artifacts-destination s3://\S+", mlflow)
    assert "--serve-artifacts" in mlflow
    # trials on workers find the tracking server at the head's address
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


# --------------------------------------------------------------------------------------------------
# Safe by default (issue #12, item 6). Each of these fails on the cluster.yaml of commit 81a397a.


def node_configs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: t["node_config"] for name, t in config["available_node_types"].items()}


def test_nothing_is_open_to_every_address() -> None:
    """No 0.0.0.0 anywhere: neither an inbound rule for every address nor a server on all interfaces."""
    raw = CLUSTER_YAML.read_text()
    assert "0.0.0.0" not in raw
    assert "::/0" not in raw


def test_every_node_type_names_our_security_group_so_ray_adds_no_rule(prepared: dict[str, Any]) -> None:
    """A group Ray creates always admits SSH from everywhere (its default rule, whatever IpPermissions
    say); with SecurityGroupIds on every node type Ray creates no group and adds no rule."""
    groups = {name: tuple(nc.get("SecurityGroupIds", ())) for name, nc in node_configs(prepared).items()}
    assert all(groups.values()), groups
    assert len(set(groups.values())) == 1, groups  # one group: its members talk to each other
    assert "security_group" not in prepared["provider"]


def test_rays_bootstrap_leaves_security_groups_alone(prepared: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same through Ray's own bootstrap step (needs boto3, which `pip install .[cluster]` adds)."""
    pytest.importorskip("boto3")
    from ray.autoscaler._private.aws import config as aws_config

    def no_ray_groups(*args: Any) -> None:
        raise AssertionError("Ray would create a security group with SSH open to every address")

    monkeypatch.setattr(aws_config, "_upsert_security_groups", no_ray_groups)
    aws_config._configure_security_group(copy.deepcopy(prepared))


def test_placeholder_security_group_is_refused_before_any_instance(
    prepared: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray's schema accepts any group id, so the placeholder is refused one step later: `ray up`'s
    bootstrap looks the group up (before launching anything) and stops when EC2 knows no such group."""
    groups = {g for nc in node_configs(prepared).values() for g in nc.get("SecurityGroupIds", [])}
    assert len(groups) == 1, groups
    (group,) = groups
    assert "CHANGE-ME" in group  # the user puts the id of the group they created (docs/cluster.md) here
    pytest.importorskip("boto3")
    from ray.autoscaler._private.aws import config as aws_config

    class NoSuchGroup:  # what EC2 answers for a group id that does not exist
        class security_groups:  # noqa: N801
            @staticmethod
            def filter(Filters: list[dict[str, Any]]) -> list[Any]:  # noqa: N803
                assert Filters == [{"Name": "group-id", "Values": [group]}]
                return []

    monkeypatch.setattr(aws_config, "_resource", lambda name, config: NoSuchGroup())
    with pytest.raises(AssertionError):
        aws_config._configure_subnet(copy.deepcopy(prepared))


def test_head_uses_our_scoped_profile_not_rays_default(prepared: dict[str, Any]) -> None:
    raw = CLUSTER_YAML.read_text()
    assert "ray-autoscaler-v1" not in raw
    profiles = {name: nc["IamInstanceProfile"]["Name"] for name, nc in node_configs(prepared).items()}
    head = profiles.pop(prepared["head_node_type"])
    assert head == "vidgan-ray-head"
    assert set(profiles.values()) == {"vidgan-ray-worker"}


def test_head_policy_passes_only_the_worker_role_and_scopes_ec2_and_s3(prepared: dict[str, Any]) -> None:
    statements = json.loads(HEAD_POLICY.read_text())["Statement"]
    worker_roles = {nc["IamInstanceProfile"]["Name"] for n, nc in node_configs(prepared).items()
                    if n != prepared["head_node_type"]}  # fmt: skip
    head_profile = node_configs(prepared)[prepared["head_node_type"]]["IamInstanceProfile"]["Name"]
    # the head runs with the profile docs/cluster.md creates from this policy (role and profile of one name)
    assert head_profile == "vidgan-ray-head" and head_profile not in worker_roles
    guide = (REPO / "docs" / "cluster.md").read_text()
    assert "file://cluster/iam-$p-policy.json" in guide and "for p in head worker" in guide

    def actions(st: dict[str, Any]) -> list[str]:
        return [st["Action"]] if isinstance(st["Action"], str) else st["Action"]

    def resources(st: dict[str, Any]) -> list[str]:
        return [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]

    assert all(st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st for st in statements)
    # iam: PassRole only, for the worker role only (the role in the worker profile has its name)
    iam = [st for st in statements if any(a.startswith("iam:") for a in actions(st))]
    assert iam and all(actions(st) == ["iam:PassRole"] for st in iam)
    assert {r.rsplit(":role/", 1)[1] for st in iam for r in resources(st)} == worker_roles
    assert all(st["Condition"]["StringEquals"]["iam:PassedToService"] == "ec2.amazonaws.com" for st in iam)
    # ec2: only Describe* on "*"; launching and managing instances only when tagged for this cluster
    cluster = prepared["cluster_name"]
    for st in statements:
        for action in actions(st):
            assert not action.endswith("*"), action
            if "*" in resources(st):
                assert action.startswith("ec2:Describe"), action
            if action in {"ec2:TerminateInstances", "ec2:StopInstances", "ec2:StartInstances"}:
                assert st["Condition"]["StringEquals"]["ec2:ResourceTag/ray-cluster-name"] == cluster
    run_instance = [st for st in statements if "ec2:RunInstances" in actions(st)
                    and any(":instance/" in r for r in resources(st))]  # fmt: skip
    assert run_instance
    assert all(st["Condition"]["StringEquals"]["aws:RequestTag/ray-cluster-name"] == cluster for st in run_instance)
    tag = [st for st in statements if "ec2:CreateTags" in actions(st)]
    assert tag and all(
        st["Condition"]["StringEquals"].get("ec2:CreateAction") == "RunInstances"
        or st["Condition"]["StringEquals"].get("ec2:ResourceTag/ray-cluster-name") == cluster
        for st in tag
    )
    # s3: the one bucket the cluster uses (the worker policy's), nothing else
    bucket = re.search(r"--artifacts-destination s3://([^/\s]+)/", mlflow_server_command(prepared)).group(1)
    s3 = {r for st in statements if any(a.startswith("s3:") for a in actions(st)) for r in resources(st)}
    assert s3 and all(r.split(":::", 1)[1].split("/", 1)[0] == bucket for r in s3)
    worker = json.loads(WORKER_POLICY.read_text())["Statement"]
    assert s3 == {r for st in worker for r in resources(st)}


def test_mlflow_listens_on_the_private_address_with_basic_auth(prepared: dict[str, Any]) -> None:
    mlflow = mlflow_server_command(prepared)
    assert "--app-name basic-auth" in mlflow
    host = re.search(r'--host ("[^"]*"|\S+)', mlflow).group(1)
    assert host == '"$(cat ~/mlflow/host)"'
    # that file holds the head's private address, from the function Ray uses for $RAY_HEAD_IP
    head_start = prepared["head_start_ray_commands"]
    assert any("get_node_ip_address" in c and c.endswith("> ~/mlflow/host") for c in head_start)
    # the head's own job driver reaches MLflow at that address too (not at 127.0.0.1)
    assert "MLFLOW_TRACKING_URI=http://$(cat ~/mlflow/host):5000" in " ".join(head_start)


def test_mlflow_credentials_come_from_the_users_machine(prepared: dict[str, Any]) -> None:
    """The admin user and the trials' login come from ~/.vidgan/mlflow.env, copied from the user's
    machine (outside the repository); the auth config in git holds no password."""
    remote = "~/.vidgan/mlflow.env"
    assert remote in prepared["file_mounts"]
    local = Path(prepared["file_mounts"][remote]).expanduser()
    assert REPO not in local.parents
    source = f". {remote}"
    mlflow = mlflow_server_command(prepared)
    assert source in mlflow
    assert 'MLFLOW_AUTH_ADMIN_USERNAME="$MLFLOW_TRACKING_USERNAME"' in mlflow
    assert 'MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_TRACKING_PASSWORD"' in mlflow
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):  # trials inherit `ray start`'s env
        assert any(source in c and "ray start" in c for c in prepared[key]), key
    assert not re.search(r"MLFLOW_\w*PASSWORD=[^\"$\s]", CLUSTER_YAML.read_text())
    # the auth config cluster.yaml names (read as mlflow.server.auth.config does): no credentials in it
    ini = re.search(r"MLFLOW_AUTH_CONFIG_PATH=/home/ray/vidgan/(\S+)", mlflow).group(1)
    auth = configparser.ConfigParser()
    assert auth.read(REPO / ini)
    assert not {"admin_username", "admin_password"} & set(auth["mlflow"])
    assert auth["mlflow"]["database_uri"].startswith("sqlite:////home/ray/mlflow/")
    assert auth["mlflow"]["default_permission"] in {"NO_PERMISSIONS", "READ"}


def test_mlflow_databases_are_backed_up_and_restored(prepared: dict[str, Any]) -> None:
    head_start = prepared["head_start_ray_commands"]
    assert any("cluster/mlflow_db.py restore" in c for c in head_start)
    restore = next(i for i, c in enumerate(head_start) if "cluster/mlflow_db.py restore" in c)
    server = head_start.index(mlflow_server_command(prepared))
    loop = next(i for i, c in enumerate(head_start) if "cluster/mlflow_db.py loop" in c)
    assert restore < server < loop  # restored before MLflow opens it, then backed up periodically
    backup = next(o for o in prepared["docker"]["run_options"] if "VIDGAN_MLFLOW_BACKUP=" in o)
    bucket = re.search(r"--artifacts-destination s3://([^/\s]+)/", mlflow_server_command(prepared)).group(1)
    assert f"VIDGAN_MLFLOW_BACKUP=s3://{bucket}/vidgan/" in backup  # inside what both IAM policies allow
    # teardown: cluster/down.sh backs up once more, then `ray down`
    down = [ln for ln in (REPO / "cluster" / "down.sh").read_text().splitlines() if not ln.startswith("#")]
    assert "set -euo pipefail" in down
    assert "mlflow_db.py backup" in down[-2] and down[-1].startswith("ray down")


def test_downloads_are_checked_against_pinned_sha256(prepared: dict[str, Any]) -> None:
    for cmd in commands(prepared):
        if re.search(r"\b(wget|curl)\b", cmd):
            assert "sha256sum -c" in cmd, cmd
    assert any(c.startswith("bash ~/vidgan/cluster/install_metrics.sh") for c in prepared["head_setup_commands"])
    script = INSTALL_METRICS.read_text()
    assert "sha256sum -c" in script
    for var in ("PROMETHEUS_SHA256", "GRAFANA_SHA256"):
        assert re.search(rf"install \w+ \S+ \\\n.*\\\n.*{var}", script), var


# --------------------------------------------------------------------------------------------------
# The helper scripts themselves, run here without AWS or network.


def fake_release(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A `wget` that serves fake Prometheus and Grafana archives, and their sha256 sums."""
    archives = {}
    for name, top, binary in (("prometheus-2.53.2.linux-amd64.tar.gz", "prometheus-2.53.2.linux-amd64", "prometheus"),
                              ("grafana-11.2.0.linux-amd64.tar.gz", "grafana-v11.2.0", "bin/grafana")):  # fmt: skip
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            info = tarfile.TarInfo(f"{top}/{binary}")
            info.mode, data = 0o755, b"#!/bin/sh\n"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        (tmp_path / name).write_bytes(buf.getvalue())
        archives[name] = hashlib.sha256(buf.getvalue()).hexdigest()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wget = bin_dir / "wget"  # wget -q -O FILE URL
    wget.write_text(f'#!/bin/sh\ncp "{tmp_path}/$(basename "$4")" "$3"\n')
    wget.chmod(0o755)
    sums = {"PROMETHEUS_SHA256": archives["prometheus-2.53.2.linux-amd64.tar.gz"],
            "GRAFANA_SHA256": archives["grafana-11.2.0.linux-amd64.tar.gz"]}  # fmt: skip
    return bin_dir, sums


def run_install(dest: Path, bin_dir: Path, **sums: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_SHA256")}
    env.update(sums, PATH=f"{bin_dir}{os.pathsep}{env['PATH']}")
    cmd = ["bash", str(INSTALL_METRICS), str(dest)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def test_install_metrics_fails_closed(tmp_path: Path) -> None:
    bin_dir, sums = fake_release(tmp_path)
    # the sums shipped in the script are placeholders: nothing is downloaded, the error names the variable
    proc = run_install(tmp_path / "a", bin_dir)
    assert proc.returncode != 0 and "PROMETHEUS_SHA256" in proc.stderr
    assert not any((tmp_path / "a").iterdir())
    # a wrong sum: nothing installed, the archive removed
    proc = run_install(tmp_path / "b", bin_dir, **{**sums, "GRAFANA_SHA256": "0" * 64})
    assert proc.returncode != 0 and "GRAFANA_SHA256" in proc.stderr
    assert not (tmp_path / "b" / "grafana").exists() and not list((tmp_path / "b").glob("*.tar.gz"))
    # the right sums: both installed
    proc = run_install(tmp_path / "c", bin_dir, **sums)
    assert proc.returncode == 0, proc.stderr
    assert os.access(tmp_path / "c" / "prometheus" / "prometheus", os.X_OK)
    assert os.access(tmp_path / "c" / "grafana" / "bin" / "grafana", os.X_OK)


def test_mlflow_db_backup_restore_round_trip(tmp_path: Path) -> None:
    head, backup, new_head = tmp_path / "head", tmp_path / "bucket", tmp_path / "new-head"
    head.mkdir()
    with sqlite3.connect(head / "mlflow.db") as db:
        db.execute("create table runs (name text)")
        db.execute("insert into runs values ('sweep-parent')")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(MLFLOW_DB), *args], capture_output=True, text=True, timeout=60)

    with sqlite3.connect(head / "optuna.db") as db:  # a search sweep's study, beside MLflow's runs
        db.execute("create table studies (study_name text)")
        db.execute("insert into studies values ('search-1')")

    assert run("backup", "--dir", str(head), "--uri", str(backup)).returncode == 0
    assert run("restore", "--dir", str(new_head), "--uri", str(backup)).returncode == 0
    with sqlite3.connect(new_head / "mlflow.db") as db:
        assert db.execute("select name from runs").fetchall() == [("sweep-parent",)]
    with sqlite3.connect(new_head / "optuna.db") as db:
        assert db.execute("select study_name from studies").fetchall() == [("search-1",)]
    # a head that has its database keeps it; the placeholder bucket is refused
    with sqlite3.connect(new_head / "mlflow.db") as db:
        db.execute("insert into runs values ('newer')")
    assert run("restore", "--dir", str(new_head), "--uri", str(backup)).returncode == 0
    with sqlite3.connect(new_head / "mlflow.db") as db:
        assert len(db.execute("select name from runs").fetchall()) == 2
    proc = run("restore", "--dir", str(tmp_path / "x"), "--uri", "s3://CHANGE-ME-bucket/vidgan/mlflow-db")
    assert proc.returncode != 0 and "CHANGE-ME-bucket" in proc.stderr
