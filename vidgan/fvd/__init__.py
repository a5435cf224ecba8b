"""Fréchet Video Distance and Kernel Video Distance with the canonical I3D, in pure PyTorch, offline.

The numerics follow the canonical FVD (Unterthiner et al. 2018; see the module docstrings). Public API:

* :class:`I3D`, :func:`load_i3d`, :func:`extract_features` — the network and batched feature extraction;
* :func:`frechet_distance`, :func:`kvd` — distances between two feature sets ``[N, 400]``;
* :func:`real_features` — real-data features, computed once per (manifest, frames, n) and cached with the data;
* :class:`FVDEvaluator` — what a trial calls to score its generator.

FVD and KVD are only comparable at equal sample counts: every entry point takes them explicitly.
The names are imported lazily, so ``import vidgan.fvd.cli`` (done by the ``vidgan`` dispatcher) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "I3D": ".i3d",
    "FVDEvaluator": ".evaluator",
    "extract_features": ".features",
    "load_i3d": ".features",
    "frechet_distance": ".distance",
    "frechet_distance_bootstrap": ".distance",
    "kvd": ".distance",
    "real_features": ".stats",
}

__all__ = [
    "I3D",
    "FVDEvaluator",
    "extract_features",
    "frechet_distance",
    "frechet_distance_bootstrap",
    "kvd",
    "load_i3d",
    "real_features",
]

if TYPE_CHECKING:
    from .distance import frechet_distance, frechet_distance_bootstrap, kvd
    from .evaluator import FVDEvaluator
    from .features import extract_features, load_i3d
    from .i3d import I3D
    from .stats import real_features


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
