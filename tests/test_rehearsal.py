"""The local rehearsal of the cluster path (cluster/rehearse.py, `make rehearse`) end to end.

Starts a fake autoscaling GPU cluster on this machine (own ports and temp dir) with its bucket on a local S3
server, submits the rehearsal sweep with `ray job submit`, and tears everything down. Slow (a few minutes on 2
cores) but runs in CI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _holding(folder: str) -> list[str]:
    """Processes with a file under ``folder`` open (deleted since, or not), or their working folder there."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = [os.readlink(proc / "cwd")] + [os.readlink(fd) for fd in (proc / "fd").iterdir()]
            name = (proc / "cmdline").read_bytes().replace(b"\0", b" ")[:80].decode(errors="replace")
        except OSError:  # gone, or not ours to read
            continue
        if any(link == folder or link.startswith(folder + "/") for link in links):
            found.append(f"{proc.name} {name}")
    return found


@pytest.mark.slow
def test_rehearsal_scales_out_runs_trials_on_workers_and_cleans_up(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "cluster/rehearse.py", "--json", str(summary_path), "--timeout", "540"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(proc.stdout[-8000:])
    print(proc.stderr[-4000:], file=sys.stderr)
    summary = json.loads(summary_path.read_text())
    # everything the rehearsal started is gone, whatever happened: by its own count, and by what this test sees of
    # the machine (no process holds a file of its scratch folder open: Ray's agents, renamed by setproctitle, lost the
    # marker the teardown looks for, outlived their raylet and spun for minutes until the teardown followed them)
    assert summary["leftover_processes"] == 0
    assert not Path(summary["scratch"]).exists()
    assert _holding(summary["scratch"]) == []
    assert summary["job_status"] == "SUCCEEDED", summary.get("job_logs_tail", "")[-3000:]
    # the autoscaler added fake GPU worker nodes for the pending fractional-GPU trials ...
    workers = summary["worker_nodes_added"]
    assert len(workers) >= 1
    assert all(w["resources"].get("GPU", 0) >= 1 and not w["is_head"] for w in workers)
    # ... and the trials ran on them, never on the head
    placed = [t for t in summary["trials"] if t.get("placed")]
    assert placed and all(t["on_worker"] for t in placed)
    # the cloud path: the dataset, Tune's checkpoints and MLflow's artifacts (through the server) are in the bucket
    # of the local S3 server, as cluster.yaml keeps them in the user's bucket
    bucket = summary["bucket"]
    assert bucket["dataset_manifests"] >= 1 and bucket["tune_checkpoints"] >= 1 and bucket["mlflow_artifacts"] >= 1
    # `ray job status` / `ray job logs` were fetched through the job API
    assert "succeeded" in summary["job_status_cli"].lower()
    assert summary["job_logs_tail"].strip()
    assert proc.returncode == 0
