"""Progress bars: ingest shows one, the I3D passes report every clip, counts travel out of a (Ray) task."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import warm_cli

from vidgan.fvd.features import extract_features
from vidgan.progress import enabled, progress, run_reporting


def test_run_reporting_yields_the_counts_then_the_value() -> None:
    def work(report):
        for n in (3, 4, 1):
            report(n)
        return "done"

    assert list(run_reporting(work)) == [3, 4, 1, "done"]


def test_run_reporting_raises_the_error_of_the_work() -> None:
    def work(report):
        report(2)
        raise ValueError("bad clip")

    seen = []
    with pytest.raises(ValueError, match="bad clip"):
        for item in run_reporting(work):
            seen.append(item)
    assert seen == [2]


def test_extract_features_reports_every_clip() -> None:
    class Model:  # stands in for the I3D: 400 logits per clip
        def features(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(len(x), 400)

    counts: list[int] = []
    clips = [np.zeros((5, 9, 8, 8, 3), np.uint8), np.zeros((6, 9, 8, 8, 3), np.uint8)]
    feats = extract_features(Model(), clips, batch_size=4, on_batch=counts.append)
    assert feats.shape == (11, 400)
    assert sum(counts) == 11 and max(counts) <= 4


def test_progress_env_switch(monkeypatch) -> None:
    monkeypatch.setenv("VIDGAN_PROGRESS", "0")
    assert enabled() is False and progress(range(3)).disable
    monkeypatch.setenv("VIDGAN_PROGRESS", "1")
    with open(os.devnull, "w") as sink:
        assert enabled() is True and not progress(range(3), file=sink).disable
    monkeypatch.delenv("VIDGAN_PROGRESS")
    assert enabled() is None


def test_ingest_shows_a_progress_bar(tmp_path) -> None:
    env = {**os.environ, "VIDGAN_PROGRESS": "1"}
    proc = warm_cli.run(  # its own process, forked from a server with torch imported
        "vidgan.cli", ["ingest", "--sample", "--out", tmp_path / "d", "--frames", 16, "--size", 32, "--stride", 16,
                       "--parallel", "local"], env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ingest: 100%" in proc.stderr and "video" in proc.stderr, proc.stderr[-2000:]
