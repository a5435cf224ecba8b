"""Restarts of trials made visible: which trial lost its node (or was preempted), from which iteration it resumed
and on which node.

:class:`RestartRecorder` (as the Tune callback :class:`tune_jobs.restart_callback.RestartLog`) runs in the
sweep's driver. When Tune recovers a trial (FailureConfig) it notes the cause (the node died, the node was
drained as on a spot preemption, or an error), the iteration of the checkpoint the trial resumes from, and the
node it lost, and writes them to ``vidgan_restarts.json`` in the trial's folder on the sweep's storage (so they
survive a driver restart and the trial reads them); at the trial's first result after the restart it says in one
plain line of the sweep's log where it resumed. The trial puts them on its MLflow run (:func:`restart_tags`),
and the comparison table and the summary count them.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

log = logging.getLogger("tune_jobs.sweep")

RESTARTS_FILE = "vidgan_restarts.json"
TAG_RESTARTS = "vidgan.restarts"  # how many times the trial was restarted
TAG_RESTART_LOG = "vidgan.restart_log"  # each restart: "<iteration>:<cause>", comma-separated
NODE_LOST, PREEMPTED = "node lost", "preempted"


def failure_cause(error: BaseException | None) -> str:
    """``preempted`` (the node was drained first, as a spot notice does; Tune does not count it against
    ``max_failures``), ``node lost`` (the trial's actor or its node died), else ``error: <its last line>``."""
    from ray.exceptions import NodeDiedError, RayActorError

    if isinstance(error, RayActorError):
        return PREEMPTED if error.preempted else NODE_LOST
    if isinstance(error, NodeDiedError):
        return NODE_LOST
    text = str(error or "unknown").strip().splitlines() or ["unknown"]
    return "error: " + text[-1][:200]


def _read_error(trial: Any) -> BaseException | None:
    """The exception Tune pickled for a trial's latest failure (None when there is none)."""
    import ray.cloudpickle as pickle

    path = getattr(trial, "pickled_error_file", None)
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception:  # noqa: BLE001 - unreadable: the cause stays unknown
        return None


def read_restarts(fs: Any, folder: str) -> list[dict[str, Any]]:
    """The restarts recorded in a trial's folder (``fs``: a pyarrow filesystem)."""
    try:
        with fs.open_input_stream(f"{folder}/{RESTARTS_FILE}") as f:
            return json.loads(f.read().decode())
    except (FileNotFoundError, OSError, ValueError):
        return []


def write_restarts(fs: Any, folder: str, restarts: list[dict[str, Any]]) -> None:
    from vidgan.files import atomic_write_fs

    fs.create_dir(folder, recursive=True)
    atomic_write_fs(fs, f"{folder}/{RESTARTS_FILE}", json.dumps(restarts, indent=1).encode())


def restart_tags(restarts: list[dict[str, Any]]) -> dict[str, str]:
    """The MLflow tags of a trial's restarts: the count and each restart's iteration and cause."""
    entries = ",".join(f"{r['iteration']}:{r['cause']}" for r in restarts)
    return {TAG_RESTARTS: str(len(restarts)), TAG_RESTART_LOG: entries[-5000:]}


def parse_restart_log(text: str) -> list[str]:
    """The causes in a :data:`TAG_RESTART_LOG` tag, in order (a cause may hold commas and colons)."""
    return [m.group(2) for m in re.finditer(r"(?:^|,)(\d+):(.*?)(?=,\d+:|$)", text)]


def restart_line(causes: list[str]) -> str:
    """The summary's count of restarts by cause, e.g. "3 restarts from checkpoints (2 node lost, 1 preempted)"
    ('' when there was none)."""
    if not causes:
        return ""
    by = ", ".join(f"{causes.count(c)} {c}" for c in dict.fromkeys(causes))
    return f"{len(causes)} restart{'s' if len(causes) > 1 else ''} from checkpoints ({by})"


def restart_sentence(restarts: list[dict[str, Any]]) -> str:
    """For a run's description: "Restarted twice: node lost at iteration 4, preempted at iteration 8."."""
    if not restarts:
        return ""
    times = {1: "once", 2: "twice"}.get(len(restarts), f"{len(restarts)} times")
    what = ", ".join(f"{r['cause']}, resumed from iteration {r['iteration']}"
                     + (f" on node {r['node'][:8]}" if r.get("node") else "") for r in restarts)
    return f"Restarted {times} ({what})."


def _short(node: str | None) -> str:
    return node[:8] if node else "?"


class RestartRecorder:
    """What the Tune callback :class:`tune_jobs.restart_callback.RestartLog` does, without Ray: records each trial
    restart, says it in the sweep log, keeps it on the sweep's storage."""

    def __init__(self) -> None:
        self.restarts: dict[str, list[dict[str, Any]]] = {}
        self._pending: dict[str, dict[str, Any]] = {}
        self.names: dict[str, str] = {}

    def _save(self, trial: Any) -> None:
        try:
            storage = trial.storage
            write_restarts(storage.storage_filesystem, storage.trial_fs_path, self.restarts[trial.trial_id])
        except Exception as exc:  # noqa: BLE001 - the log line and the summary have it anyway
            log.warning("restarts of trial %s not saved: %s", trial.trial_id, exc)

    def _known(self, trial: Any) -> list[dict[str, Any]]:
        if trial.trial_id not in self.restarts:  # a resumed sweep: what earlier drivers recorded
            storage = trial.storage
            self.restarts[trial.trial_id] = read_restarts(storage.storage_filesystem, storage.trial_fs_path)
        return self.restarts[trial.trial_id]

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        entry = {
            "iteration": int(last.get("iteration", 0) or 0),  # every report carries a checkpoint: it resumes there
            "cause": failure_cause(_read_error(trial)),
            "lost_node": str(last.get("node_id", "")),
            "checkpoint": trial.checkpoint is not None,
            "time": time.time(),
            # to estimate the iterations lost with the node: when the checkpoint was reported, and the pace then
            "reported_at": float(last.get("timestamp", 0) or 0),
            "iterations_per_s": float(last.get("iterations_per_s", 0) or 0),
        }
        self._known(trial).append(entry)
        self._pending[trial.trial_id] = entry
        self._save(trial)
        log.warning("trial %s %s: %s on node %s; it restarts from %s", trial.trial_id, self._name(trial),
                    entry["cause"], _short(entry["lost_node"]),
                    f"its checkpoint at iteration {entry['iteration']}" if entry["checkpoint"] else "the start")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        entry = self._pending.pop(trial.trial_id, None)
        if entry is None:
            return
        entry["node"] = str(result.get("node_id", ""))
        entry["resumed_after_s"] = round(time.time() - entry["time"], 1)
        self._save(trial)
        n = len(self._known(trial))
        log.warning("trial %s %s, %s on node %s, resumed from iteration %d on node %s (restart %d of this trial, "
                    "%.0f s later)", trial.trial_id, self._name(trial), entry["cause"], _short(entry["lost_node"]),
                    entry["iteration"], _short(entry["node"]), n, entry["resumed_after_s"])

    def _name(self, trial: Any) -> str:
        config = trial.config or {}
        return "(" + ", ".join(f"{k} {config[k]}" for k in ("variant", "seed") if k in config) + ")"

    def count(self, trial_id: str) -> int:
        return len(self.restarts.get(trial_id, []))

