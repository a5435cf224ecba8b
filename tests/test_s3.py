"""Cloud storage against a real S3 API (moto's server on localhost, tests/s3_server.py): every path a command takes
works on ``s3://`` or is refused in one line before anything is written, and never becomes a local folder ``s3:``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest
from s3_server import list_keys

from vidgan import shards, storage
from vidgan.files import WriterBusy
from vidgan.ingest import IngestConfig, IngestError, ingest
from vidgan.ingest.config import SyntheticSpec
from vidgan.ingest.pipeline import staging_dir

SQUARES = SyntheticSpec(kind="squares", clips=24, seed=0)


def vidgan(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tune_jobs.main", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


keys = list_keys


def no_local_s3_folder(cwd: Path) -> None:
    assert not (cwd / "s3:").exists(), "a local folder named 's3:' was created"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIDGAN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_ingest_to_s3_publishes_a_whole_dataset_that_reads_back(s3_bucket, tmp_path, cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = f"{s3_bucket}/vidgan/data/squares"
    manifest = ingest([], out, IngestConfig(frames=8, size=16, synthetic=SQUARES, parallel="local"))
    no_local_s3_folder(tmp_path)
    objects = keys(s3_bucket)
    assert "vidgan/data/squares/manifest.json" in objects
    assert [k for k in objects if k.endswith(".parquet")] == [f"vidgan/data/squares/{s['file']}"
                                                           for s in manifest["shards"]]
    assert not [k for k in objects if "vidgan-lock" in k or "vidgan-tmp" in k or "probe" in k], objects
    assert not staging_dir(out).exists()  # removed once published
    local = tmp_path / "local"
    ingest([], local, IngestConfig(frames=8, size=16, synthetic=SQUARES, parallel="local"))
    remote_clips = np.concatenate(list(shards.iter_clips(out)))
    local_clips = np.concatenate(list(shards.iter_clips(str(local))))
    assert remote_clips.shape == (24, 8, 16, 16, 3)
    np.testing.assert_array_equal(remote_clips, local_clips)  # verified (sizes, sha256) and read from the bucket
    with pytest.raises(IngestError, match="already holds a dataset"):
        ingest([], out, IngestConfig(frames=8, size=16, synthetic=SQUARES, parallel="local"))


def test_ingest_cli_to_s3_and_its_refusals(s3_bucket, s3_server, tmp_path):
    env = {"VIDGAN_CACHE": str(tmp_path / "cache")}
    ok = vidgan("ingest", "--synthetic", "squares", "--clips", "16", "--frames", "8", "--size", "16",
                "--out", f"{s3_bucket}/sq", cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.splitlines()[-1])["out"] == f"{s3_bucket}/sq"
    assert shards.verified(f"{s3_bucket}/sq").clips == 16
    missing = vidgan("ingest", "--synthetic", "squares", "--clips", "16", "--out", "s3://no-such-bucket-vg/sq",
                     cwd=tmp_path, env=env)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "bucket 'no-such-bucket-vg' does not exist" in missing.stderr
    gs = vidgan("ingest", "--synthetic", "squares", "--clips", "16", "--out", "gs://bucket/sq", cwd=tmp_path, env=env)
    assert gs.returncode == 2 and "gs:// is read-only here" in gs.stderr and gs.stderr.count("\n") == 1
    no_local_s3_folder(tmp_path)
    assert not (tmp_path / "gs:").exists()


def test_pyarrow_query_uris_work_for_writing_and_reading(s3_bucket, s3_server, tmp_path, cache):
    host = s3_server.removeprefix("http://")
    out = f"{s3_bucket}/q?endpoint_override={host}&scheme=http"
    ingest([], out, IngestConfig(frames=8, size=16, synthetic=SQUARES, parallel="local"))
    assert shards.verified(out).clips == 24
    assert "q/manifest.json" in keys(s3_bucket)


def test_a_second_writer_of_an_s3_target_is_refused_naming_the_first(s3_bucket, s3_server):
    target = f"{s3_bucket}/ckpt.pt"
    with storage.claim(target, command="vidgan train"):
        assert keys(s3_bucket) == [".ckpt.pt.vidgan-lock"]
        with pytest.raises(WriterBusy, match=r"being written by vidgan train \(pid \d+"), storage.claim(target):
            pass
    assert keys(s3_bucket) == []  # released


def test_a_lease_left_by_a_dead_process_of_this_host_is_taken_over(s3_bucket, s3_server):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lease = storage.lease_location(f"{s3_bucket}/data", folder=True)
    boto3.client("s3").put_object(Bucket=s3_bucket[5:], Key="data/.vidgan-lock", Body=json.dumps(
        {"pid": int(dead.stdout), "host": __import__("socket").gethostname(), "command": "vidgan ingest",
         "since": "then"}).encode())
    with storage.claim(f"{s3_bucket}/data", folder=True):
        pass
    assert not storage.exists(lease)


def test_probe_refuses_a_missing_bucket_in_one_line(s3_server):
    with pytest.raises(storage.StorageError, match="bucket 'no-such-bucket-vg' does not exist"):
        storage.probe_writable("s3://no-such-bucket-vg/results", "storage_path")


def test_train_resume_and_fvd_checkpoints_on_s3(s3_bucket, tmp_path, cache, monkeypatch, capsys):
    from vidgan.cli import main
    from vidgan.trainer import load_generator, read_checkpoint

    monkeypatch.chdir(tmp_path)
    data = f"{s3_bucket}/sq"
    ingest([], data, IngestConfig(frames=16, size=32, synthetic=SyntheticSpec(kind="squares", clips=8, seed=0),
                                  parallel="local"))
    ckpt = f"{s3_bucket}/runs/c.pt"
    args = ["train", "--data", data, "--width", "4", "--batch-size", "2", "--checkpoint", ckpt, "--device", "cpu"]
    assert main([*args, "--iterations", "1"]) == 0
    assert read_checkpoint(ckpt)["counters"]["iteration"] == 1
    capsys.readouterr()
    assert main([*args, "--iterations", "2"]) == 2  # exists: refused, not silently a new run
    assert f"checkpoint {ckpt} exists: pass --resume" in capsys.readouterr().err
    assert main([*args, "--iterations", "2", "--resume"]) == 0
    assert read_checkpoint(ckpt)["counters"]["iteration"] == 2  # resumed from the bucket, not a new run
    generator, model = load_generator(ckpt)
    assert model.width == 4 and model.frames == 16
    from vidgan.fvd.stats import stats_shown

    assert stats_shown(data, 4, 16).startswith(f"{data}/fvd_stats/i3d-k400-")  # said "cached at bucket/..."
    assert "runs/.c.pt.vidgan-lock" not in keys(s3_bucket) and not [k for k in keys(s3_bucket) if "vidgan-tmp" in k]
    no_local_s3_folder(tmp_path)
    capsys.readouterr()
    assert main(["fvd", "--real", data, "--checkpoint", f"{s3_bucket}/runs/none.pt", "--n", "4"]) == 2
    assert f"checkpoint {s3_bucket}/runs/none.pt does not exist" in capsys.readouterr().err
    assert main([*args[:-4], "--checkpoint", "s3://no-such-bucket-vg/c.pt", "--iterations", "1"]) == 2
    assert "bucket 'no-such-bucket-vg' does not exist" in capsys.readouterr().err
    no_local_s3_folder(tmp_path)
