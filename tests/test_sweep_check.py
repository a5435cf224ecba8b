"""`vidgan sweep SPEC --check` (as a process of its own, forked from a server with torch and MLflow imported and
never Ray: :mod:`warm_cli`): the plan and exit 0, or exit 2 with one line; never Ray.

Also the pieces of the plan and of `resources.gpu: auto` that need no cluster.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import warm_cli
import yaml

from tune_jobs import runtime
from tune_jobs.plan import asha_rungs
from tune_jobs.spec import parse_spec

REPO = Path(__file__).resolve().parents[1]

# `vidgan` in-process, then a check that nothing imported Ray (so no Ray was started).
RUNNER = r"""
import sys
from tune_jobs.main import main
code = main(sys.argv[1:])
assert "ray" not in sys.modules, "vidgan sweep --check imported Ray"
sys.exit(code)
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from vidgan.ingest import ingest_sample

    root = tmp_path_factory.mktemp("check")
    ingest_sample(root / "data", frames=16, size=32, stride=16)
    return root / "data"


def _spec(root: Path, data: Path, **changes) -> dict:
    spec = {
        "name": "chk",
        "datasets": [{"name": "sample", "path": str(data)}],
        "model": {"frames": 16, "size": 32, "width": 4, "z_dim": 8},
        "train": {"batch_size": 4, "n_critic": 2},
        "variants": ["gp", "sn"],
        "eval": {"every": 2, "n_real": 8, "n_fake": 4, "frames": 16},
        "scheduler": {"type": "asha", "max_t": 18, "grace_period": 2, "reduction_factor": 3},
        "resources": {"cpu": 1, "gpu": "auto", "data_cpu": 0},
        "mlflow": {"tracking_uri": f"sqlite:///{root}/mlflow.db", "experiment": "chk"},
        "storage_path": str(root / "results"),
    }
    spec.update(changes)
    return spec


def _check(root: Path, spec: dict) -> subprocess.CompletedProcess:
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return warm_cli.run(None, ["sweep", path, "--check"], code=RUNNER, cwd=root, timeout=120,
                        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})


def test_check_prints_the_plan_and_starts_nothing(dataset: Path, tmp_path: Path) -> None:
    proc = _check(tmp_path, _spec(tmp_path, dataset))
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "sweep chk: 2 trial(s), 2 variant(s) x 1 dataset(s) x 1 seed(s)" in out
    assert "rungs at iterations 2, 6, 18" in out
    assert "1 CPU (pyarrow reader in the trial); CPU trials, no GPU seen (resources.gpu: auto)" in out
    assert f"MLflow: sqlite:///{tmp_path}/mlflow.db, experiment chk" in out
    assert "data sample: " in out and "clips of 16x32x32" in out
    # nothing was created: no MLflow store, no Tune folder
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "results").exists()


def test_check_of_a_search_and_of_pbt(dataset: Path, tmp_path: Path) -> None:
    search = {"num_samples": 4, "points_to_evaluate": "presets",
              "space": {"lr": {"low": 1e-5, "high": 1e-3, "log": True}, "penalty_weight": {"low": 1, "high": 20}}}
    proc = _check(tmp_path, _spec(tmp_path, dataset, search=search))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"Optuna: study <sweep name> in sqlite:///{tmp_path}/optuna.db, 2 trial(s) from points_to_evaluate" \
        in proc.stdout
    pbt = {"type": "pbt", "max_t": 8, "perturbation_interval": 4, "population": 3,
           "mutations": {"lr": {"low": 1e-5, "high": 1e-3, "log": True}}}
    proc = _check(tmp_path, _spec(tmp_path, dataset, variants=["gp"], scheduler=pbt))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "3 trial(s), a PBT population of gp" in proc.stdout and "every 4 iterations" in proc.stdout


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"datasets": [{"name": "x", "path": "/nonexistent/shards"}]}, "no shard directory"),
        ({"eval": {"every": 2, "n_real": 5000, "n_fake": 4, "frames": 16}}, "fewer than eval.n_real"),
        ({"search": {"num_samples": 2, "space": {"lr": {"low": 1e-5, "high": 1e-3}}},
          "scheduler": {"type": "pbt", "max_t": 8, "perturbation_interval": 2,
                        "mutations": {"lr": {"low": 1e-5, "high": 1e-3}}}}, "cannot be combined with a search"),
        ({"mlflow": {"tracking_uri": "sqlite:////nonexistent/dir/mlflow.db"}}, "not writable"),
    ],
)
def test_check_refuses_with_one_line_and_exit_2(dataset: Path, tmp_path: Path, change: dict, reason: str) -> None:
    proc = _check(tmp_path, _spec(tmp_path, dataset, **change))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidgan sweep: error: ") and reason in lines[0], proc.stderr
    assert proc.stdout == ""


def test_asha_rungs_match_ray() -> None:
    from ray.tune.schedulers import ASHAScheduler

    for max_t, grace, rf in [(30, 10, 3), (40, 10, 2), (18, 2, 3), (7, 1, 2), (100, 5, 4)]:
        asha = ASHAScheduler(time_attr="iteration", max_t=max_t, grace_period=grace, reduction_factor=rf)
        milestones = sorted(m for m, _ in asha._brackets[0]._rungs)
        assert asha_rungs(max_t, grace, rf) == milestones, (max_t, grace, rf)


def test_gpu_auto() -> None:
    assert runtime.gpu_per_trial(0, 2) == 0
    assert runtime.gpu_per_trial(1, None) == 1 and runtime.gpu_per_trial(1, 1) == 1
    assert runtime.gpu_per_trial(1, 2) == 0.5 and runtime.gpu_per_trial(1, 3) == pytest.approx(1 / 3)
    assert runtime.gpu_per_trial(4, 2) == 1 and runtime.gpu_per_trial(2, 4) == 0.5
    spec = parse_spec({**_spec(Path("/tmp"), Path("/tmp/d")), "max_concurrent_trials": 2})
    assert spec.resources.gpu == "auto"
    assert runtime.resolve_gpu(spec, 0).resources.gpu == 0
    assert runtime.resolve_gpu(spec, 1).resources.gpu == 0.5
    fixed = parse_spec({**_spec(Path("/tmp"), Path("/tmp/d")), "resources": {"gpu": 0.25}})
    assert runtime.resolve_gpu(fixed, 8).resources.gpu == 0.25


def test_python_mismatch_is_one_line() -> None:
    assert runtime.mismatch_message((3, 11, 7), {"head": (3, 11, 2)}) is None  # patch levels may differ
    message = runtime.mismatch_message((3, 12, 1), {"10.0.0.1 (abc)": (3, 11, 9), "10.0.0.2 (def)": (3, 12, 0)})
    assert message and "\n" not in message
    assert "Python 3.12.1" in message and "3.11.9 on 10.0.0.1 (abc)" in message and "10.0.0.2" not in message
    assert "py311" in message


def test_an_address_nobody_answers_is_refused_at_once() -> None:
    """ray.init retries such an address for minutes; host:port, ray://host:port and [v6]:port are tried
    with one connect, anything else (auto, local) is left to Ray."""
    import socket

    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            server = socket.socket(family)
            server.bind((host, 0))
        except OSError:  # no IPv6 on this machine
            continue
        server.listen()
        port = server.getsockname()[1]
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for a in (address, f"ray://{address}"):
            runtime.check_reachable(a)  # something listens: no error
        server.close()
        for a in (address, f"ray://{address}"):
            with pytest.raises(runtime.ClusterMismatch, match=re.escape(f"no Ray cluster answers at {a} ")):
                runtime.check_reachable(a)
    runtime.check_reachable("auto")
    runtime.check_reachable("local")
