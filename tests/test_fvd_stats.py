"""Real features cached next to shards made by `vidgan ingest`; compute-once locking; the `vidgan fvd` CLI."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
from videogen import write_video

from vidgan.cli import main as vidgan_main
from vidgan.fvd import real_features
from vidgan.fvd.stats import compute_once, stats_location
from vidgan.ingest import IngestConfig, ingest

N, FRAMES = 3, 9


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("fvd_shards")
    src = root / "src"
    src.mkdir()
    write_video(src / "a.mp4", frames=40, width=48, height=32)
    ingest([str(src)], root / "shards", IngestConfig(frames=10, size=16, parallel="local"))
    return str(root / "shards")


def test_real_features_cached_next_to_dataset(shards_dir: str) -> None:
    feats = real_features(shards_dir, n=N, frames=FRAMES)
    assert feats.shape == (N, 400) and feats.dtype == np.float64 and np.isfinite(feats).all()
    cached = Path(stats_location(shards_dir, N, FRAMES))
    assert cached.parent == Path(shards_dir) / "fvd_stats" and cached.is_file()
    with np.load(cached, allow_pickle=False) as z:
        assert set(z.files) == {"features", "mu", "sigma", "meta"}
        assert json.loads(str(z["meta"]))["frames"] == FRAMES
    mtime = cached.stat().st_mtime_ns
    again = real_features(shards_dir, n=N, frames=FRAMES)  # read back, not recomputed
    assert np.array_equal(again, feats) and cached.stat().st_mtime_ns == mtime
    # file:// URIs resolve to the same cache
    assert np.array_equal(real_features("file://" + shards_dir, n=N, frames=FRAMES), feats)


def test_refusals(shards_dir: str) -> None:
    with pytest.raises(ValueError, match="fewer than the 1000 requested"):
        real_features(shards_dir, n=1000, frames=FRAMES)
    with pytest.raises(ValueError, match="clips of 10 frames, fewer than the 16"):
        real_features(shards_dir, n=N, frames=16)
    with pytest.raises(ValueError, match="at least 9 frames"):
        real_features(shards_dir, n=N, frames=8)


def _compute_in_child(path: str, log: str, arrived: str, n: int) -> None:
    def compute() -> dict[str, np.ndarray]:
        with open(log, "a") as f:
            f.write("computed\n")
        # holds the lock until every process has come to compute_once (an event, not a duration): all three were
        # there before any file was written, and the two that did not take the lock computed nothing
        deadline = time.monotonic() + 60
        while len(Path(arrived).read_text().split()) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"features": np.arange(4.0)}

    with open(arrived, "a") as f:
        f.write(f"{os.getpid()}\n")
    out = compute_once(pafs.LocalFileSystem(), path, compute)
    assert np.array_equal(out["features"], np.arange(4.0))


def test_concurrent_processes_compute_once(tmp_path: Path) -> None:
    path, log, arrived = str(tmp_path / "stats" / "x.npz"), str(tmp_path / "log"), tmp_path / "arrived"
    arrived.touch()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_compute_in_child, args=(path, log, str(arrived), 3)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert Path(log).read_text() == "computed\n"
    assert not list((tmp_path / "stats").glob("*.tmp"))


def test_cli_stats_and_fake_shards(shards_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--n", str(N), "--frames", str(FRAMES), "--device", "cpu", "--batch-size", "2"]
    assert vidgan_main(["fvd", "--stats", shards_dir, *common]) == 0
    assert "cached at" in capsys.readouterr().out
    assert vidgan_main(["fvd", "--real", shards_dir, "--fake", shards_dir, "--json", *common]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == N and abs(result["fvd"]) < 1e-6 and set(result) >= {"kvd", "kvd_stderr"}
    assert vidgan_main(["fvd", "--real", shards_dir, "--fake", shards_dir, "--n", "99", "--frames", "9"]) == 2
    assert "fewer than the 99 requested" in capsys.readouterr().err
