"""Prometheus metrics a trial exports through ``ray.util.metrics``.

Each trial creates one :class:`TrialMetrics`, calls :meth:`TrialMetrics.count` after every training
iteration (counters of iterations and clips, which Grafana turns into rates with ``rate()``) and
:meth:`TrialMetrics.record` at every evaluation (gauges: FVD, KVD, data wait, GPU memory). They are
served by the metrics agent of the node the trial runs on (``ray start --metrics-export-port``) and
scraped by the Prometheus that Ray's own dashboards use; ``dashboards/vidgan-sweeps.json`` plots them per trial.

Ray prefixes every application metric with ``ray_`` when it exports it, so the gauge
``vidgan_trial_fvd`` is scraped as ``ray_vidgan_trial_fvd``, and a counter also gets Prometheus' ``_total``
suffix: ``vidgan_trial_iterations`` is ``ray_vidgan_trial_iterations_total``. :data:`EXPORTED_METRIC_NAMES`
holds the exported names; the dashboard and ``tests/test_metrics.py`` rely on them.
"""

from __future__ import annotations

from typing import Any

#: tag keys on every gauge
TAG_KEYS: tuple[str, ...] = ("sweep", "trial", "variant")

#: record() keyword -> (gauge name as created, description)
_GAUGES: dict[str, tuple[str, str]] = {
    "data_wait_fraction": (
        "vidgan_trial_data_wait_fraction",
        "Fraction of wall time the trainer waited for input clips (0..1)",
    ),
    "fvd": ("vidgan_trial_fvd", "Latest Frechet Video Distance (lower is better)"),
    "kvd": ("vidgan_trial_kvd", "Latest Kernel Video Distance (lower is better)"),
    "gpu_memory_bytes": ("vidgan_trial_gpu_memory_bytes", "GPU memory allocated by the trial, bytes"),
}

#: count() keyword -> (counter name as created, description)
_COUNTERS: dict[str, tuple[str, str]] = {
    "iterations": ("vidgan_trial_iterations", "Generator iterations trained (rate(): iterations per second)"),
    "clips": ("vidgan_trial_clips", "Real training clips consumed (rate(): clips per second)"),
}

#: gauge and counter names as created with ray.util.metrics
GAUGE_NAMES: tuple[str, ...] = tuple(name for name, _ in _GAUGES.values())
COUNTER_NAMES: tuple[str, ...] = tuple(name for name, _ in _COUNTERS.values())
METRIC_NAMES: tuple[str, ...] = GAUGE_NAMES + COUNTER_NAMES

#: prefix Ray adds when exporting application metrics to Prometheus; counters also get a suffix
EXPORT_PREFIX = "ray_"
COUNTER_SUFFIX = "_total"

#: names as they appear on the Prometheus endpoint (and in the Grafana dashboard)
EXPORTED_METRIC_NAMES: tuple[str, ...] = tuple(EXPORT_PREFIX + name for name in GAUGE_NAMES) + tuple(
    EXPORT_PREFIX + name + COUNTER_SUFFIX for name in COUNTER_NAMES
)


class TrialMetrics:
    """Counters and gauges of one trial, tagged by sweep, trial and variant.

    ``ray.util.metrics`` is imported here, not at module import, so that importing this module
    costs nothing outside Ray. Outside a Ray worker (no ``ray.init``) recording is a no-op.
    """

    #: the keyword arguments of :meth:`record`
    KEYS: tuple[str, ...] = tuple(_GAUGES)

    def __init__(self, sweep: str, trial: str, variant: str) -> None:
        self.tags: dict[str, str] = {"sweep": str(sweep), "trial": str(trial), "variant": str(variant)}
        self._gauges: dict[str, Any] = {}
        self._counters: dict[str, Any] = {}
        try:
            import ray
            from ray.util.metrics import Counter, Gauge
        except ImportError:  # pragma: no cover - ray is a hard dependency
            return
        if not ray.is_initialized():
            return
        for key, (name, description) in _GAUGES.items():
            gauge = Gauge(name, description=description, tag_keys=TAG_KEYS)
            gauge.set_default_tags(self.tags)
            self._gauges[key] = gauge
        for key, (name, description) in _COUNTERS.items():
            counter = Counter(name, description=description, tag_keys=TAG_KEYS)
            counter.set_default_tags(self.tags)
            self._counters[key] = counter

    @property
    def enabled(self) -> bool:
        return bool(self._gauges)

    def count(self, *, iterations: int = 1, clips: int = 0) -> None:
        """Add one training iteration's worth (or more) to the counters."""
        if not self._counters:
            return
        if iterations:
            self._counters["iterations"].inc(float(iterations))
        if clips:
            self._counters["clips"].inc(float(clips))

    def record(
        self,
        *,
        data_wait_fraction: float | None = None,
        fvd: float | None = None,
        kvd: float | None = None,
        gpu_memory_bytes: float | None = None,
    ) -> None:
        """Set the gauges whose value is given; ``None`` leaves a gauge at its last value."""
        values = {
            "data_wait_fraction": data_wait_fraction,
            "fvd": fvd,
            "kvd": kvd,
            "gpu_memory_bytes": gpu_memory_bytes,
        }
        for key, value in values.items():
            if value is None or key not in self._gauges:
                continue
            value = float(value)
            if value != value or value in (float("inf"), float("-inf")):
                continue  # NaN / inf (e.g. a diverged FVD) are not valid Prometheus gauge values here
            self._gauges[key].set(value)
