"""Every metric the Grafana dashboard queries is exported by Ray's metrics endpoint.

Runs one short Tune trial on a real local Ray (own temp dir, metrics port picked free) that records
TrialMetrics; the trial polls the node's Prometheus endpoint until the metrics appear (the metrics
agent exports every few seconds) and reports the names it saw.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from tune_jobs.metrics import EXPORTED_METRIC_NAMES, METRIC_NAMES, TrialMetrics

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "dashboards" / "vidgan-sweeps.json"
# Exported only by nodes with physical NVIDIA GPUs (Ray's reporter agent reads them through NVML).
GPU_HARDWARE_METRICS = {"ray_node_gpus_utilization", "ray_node_gram_used"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}


def _exprs(obj: object) -> list[str]:
    """PromQL strings of a Grafana dashboard: panel targets' expr and template variables' queries."""
    found: list[str] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            is_query = key == "query" and isinstance(value, str) and "label_values" in value
            if is_query or (key in {"expr", "definition"} and isinstance(value, str)):
                found.append(value)
            else:
                found.extend(_exprs(value))
    elif isinstance(obj, list):
        for item in obj:
            found.extend(_exprs(item))
    return found


def dashboard_metric_names() -> set[str]:
    exprs = _exprs(json.loads(DASHBOARD.read_text()))
    names: set[str] = set()
    for expr in exprs:
        expr = re.sub(r"\{[^}]*\}", "{}", expr)  # drop label matchers (their values may contain words)
        expr = re.sub(r"label_values\(([^,]*),[^)]*\)", r"\1", expr)  # keep the metric, not the label
        expr = re.sub(r'"[^"]*"', "", expr)
        expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping label lists
        for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
            word, is_call = m.group(1), m.group(2)
            if is_call or word in PROMQL_WORDS or word.startswith("__") or word.isdigit():
                continue  # functions (label_values, min, sum, ...), keywords
            names.add(word)
    return names


def test_dashboard_queries_only_known_metric_names() -> None:
    names = dashboard_metric_names()
    assert set(EXPORTED_METRIC_NAMES) <= names, "every TrialMetrics gauge has a panel"
    assert all(n.startswith("ray_") for n in names), names
    # Ray's own node metrics used by the dashboard exist in the installed Ray (reporter agent gauges).
    import ray

    reporter = (Path(ray.__file__).parent / "dashboard/modules/reporter/reporter_agent.py").read_text()
    for name in GPU_HARDWARE_METRICS:
        assert name in names
        assert f'"{name.removeprefix("ray_")}"' in reporter, f"{name} is not a Ray metric"


def test_trial_metrics_without_ray_is_a_noop() -> None:
    metrics = TrialMetrics("s", "t", "gp")
    assert not metrics.enabled
    metrics.record(fvd=1.0, kvd=None)  # no error outside Ray
    metrics.count(iterations=1, clips=8)
    assert len(METRIC_NAMES) == 6
    # iterations and clips are counters (Grafana takes rate() of them), exported with Prometheus' _total suffix
    assert {"ray_vidgan_trial_iterations_total", "ray_vidgan_trial_clips_total"} <= set(EXPORTED_METRIC_NAMES)
    assert not any("per_second" in n for n in EXPORTED_METRIC_NAMES)


def test_dashboard_takes_rates_of_the_counters() -> None:
    exprs = _exprs(json.loads(DASHBOARD.read_text()))
    for counter in ("ray_vidgan_trial_iterations_total", "ray_vidgan_trial_clips_total"):
        panels = [e for e in exprs if counter in e and "label_values" not in e]
        assert panels and all(e.startswith(f"rate({counter}") for e in panels), panels


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def metrics_ray():
    """A real local Ray with a Prometheus metrics port, in its own temp dir; shut down afterwards."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    temp_dir = tempfile.mkdtemp(prefix="vgm-", dir="/tmp")  # short: Ray's socket paths must fit
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=_free_port(),
        _temp_dir=temp_dir,
    )
    node = ray.nodes()[0]
    yield f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow  # a real Ray with a metrics port
def test_every_dashboard_metric_is_exported(metrics_ray: str, tmp_path: Path) -> None:
    from ray import tune

    wanted = dashboard_metric_names()
    has_gpu = shutil.which("nvidia-smi") is not None
    required = wanted if has_gpu else wanted - GPU_HARDWARE_METRICS

    def trainable(config: dict) -> None:
        # self-contained: it runs in a Ray worker, which cannot import this test module
        import re
        import time
        import urllib.request

        from tune_jobs.metrics import TrialMetrics

        def scrape() -> str:
            with urllib.request.urlopen(config["url"], timeout=5) as resp:
                return resp.read().decode()

        metrics = TrialMetrics("test-sweep", tune.get_context().get_trial_name(), "gp")
        seen: set[str] = set()
        deadline = time.monotonic() + 300  # only a hang reaches it: the loop ends once every metric is exported
        while time.monotonic() < deadline:
            metrics.count(iterations=1, clips=4)
            metrics.record(
                data_wait_fraction=0.25,
                fvd=321.0,
                kvd=0.5,
                gpu_memory_bytes=0.0,
            )
            try:
                text = scrape()
            except OSError:
                text = ""
            seen = {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.MULTILINE)}
            if set(config["required"]) <= seen:
                break
            time.sleep(1.0)
        fvd = [ln for ln in text.splitlines() if ln.startswith("ray_vidgan_trial_fvd{")]
        its = [ln for ln in text.splitlines() if ln.startswith("ray_vidgan_trial_iterations_total{")]
        tune.report({"done": 1, "seen": " ".join(sorted(seen)), "fvd_line": fvd[0] if fvd else "",
                     "iterations_line": its[0] if its else ""})

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"url": metrics_ray, "required": sorted(required)},
        run_config=tune.RunConfig(name="metrics", storage_path=str(tmp_path), verbose=0),
    )
    results = tuner.fit()
    assert not results.errors, results.errors
    seen = set(results[0].metrics["seen"].split())
    missing = required - seen
    assert not missing, f"dashboard queries metrics the endpoint does not export: {sorted(missing)}"
    # the trial's gauges carry the sweep/trial/variant tags and the recorded value
    fvd_line = results[0].metrics["fvd_line"]
    assert 'sweep="test-sweep"' in fvd_line and 'variant="gp"' in fvd_line and 'trial="' in fvd_line
    assert fvd_line.rsplit(" ", 1)[1] == "321.0"
    # the counter is exported as a counter that only grows (one iteration counted per loop above)
    iterations_line = results[0].metrics["iterations_line"]
    assert 'sweep="test-sweep"' in iterations_line and float(iterations_line.rsplit(" ", 1)[1]) >= 1
