"""The Tune callback that records trial restarts in the sweep's driver (:class:`tune_jobs.restarts.RestartRecorder`).

A module of its own because it imports Ray: :mod:`tune_jobs.sweep` imports it inside the function that runs Tune,
so ``vidgan sweep --check`` imports no Ray.
"""

from __future__ import annotations

from ray.tune import Callback

from tune_jobs.restarts import RestartRecorder


class RestartLog(RestartRecorder, Callback):
    """Records each trial restart, says it in the sweep log, keeps it on the sweep's storage (as a Tune callback)."""
