"""Hostile inputs (#12): nothing is lost, damaged data is caught before use, and every command answers a bad
input with one line on stderr naming the file, exit status 2 and no traceback (CLIs run as processes of their own,
forked from a server that has imported torch and MLflow once: :mod:`warm_cli`).

Real files throughout: videos encoded with PyAV, shards written by ``vidgan ingest``, checkpoints by torch.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import warm_cli
from empty_store import empty_store
from videogen import write_video

from vidgan.ingest import IngestConfig, ingest
from vidgan.shards import ManifestError, iter_clips, read_manifest

CFG = IngestConfig(frames=16, size=32, shard_mb=0.01, parallel="local")  # one shard per source
TRAIN = ["--width", "4", "--batch-size", "2", "--n-critic", "1", "--iterations", "1", "--device", "cpu"]


# ----------------------------------------------------------------------------------------------- helpers


def cli_many(*argvs: list[str], env: dict[str, str] | None = None, memory_gib: float | None = None,
             timeout: float = 180) -> list[subprocess.CompletedProcess]:
    """Run ``python -m tune_jobs.main ARGV`` (``vidgan ARGV``) for each argv at once, each its own process (forked
    from a server that has torch and MLflow imported, :mod:`warm_cli`); ``env`` adds to the environment;
    ``memory_gib`` caps each process's address space (a runaway allocation fails, it cannot take the machine's
    memory)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), **(env or {})}
    rlimits = {} if memory_gib is None else {"RLIMIT_AS": int(memory_gib * 2**30)}
    procs = [warm_cli.popen("tune_jobs.main", a, env=env, rlimits=rlimits) for a in argvs]
    return [warm_cli.finish(p, timeout) for p in procs]


def refused(r: subprocess.CompletedProcess, *names: str) -> str:
    """Exit 2, no traceback, exactly one line on stderr, naming each of ``names``; returns the line."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, (r.args, r.returncode, r.stderr)
    for n in names:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def flip(path: Path, offset: int, n: int = 1) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sources, shards): three real videos and the 3-shard, 6-clip dataset ingested from them."""
    root = tmp_path_factory.mktemp("hostile")
    src = root / "src"
    src.mkdir()
    for i in range(3):
        write_video(src / f"v{i}.mp4", frames=32, width=40, height=32)
    ingest([str(src)], root / "shards", CFG)
    return src, root / "shards"


@pytest.fixture
def data(made: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the dataset, free to damage."""
    return Path(shutil.copytree(made[1], tmp_path / "shards"))


def new_checkpoint(path: Path, version: int | None = None) -> Path:
    from vidgan.config import ModelConfig, TrainConfig
    from vidgan.trainer import Trainer
    from vidgan.variants import get_variant

    trainer = Trainer(ModelConfig(frames=16, size=32, width=4), get_variant("gp"),
                      TrainConfig(batch_size=2, n_critic=1), device="cpu")
    trainer.save(path)
    if version is not None:
        state = torch.load(path, weights_only=True)
        state["version"] = version
        torch.save(state, path)
    return path


class Evil:
    """Pickles as a call of os.system: what a malicious checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ------------------------------------------------------------------------------ 1. ingest deletes nothing


def test_ingest_refuses_shards_without_manifest(made: tuple[Path, Path], data: Path, tmp_path: Path) -> None:
    src, _ = made
    (data / "manifest.json").unlink()  # a lost manifest, or a wrong --out
    other = shutil.copytree(data, tmp_path / "other")  # its own folder: one ingest writes a folder at a time
    before = snapshot(data)
    good, typo = cli_many(["ingest", src, "--out", data, "--frames", 16, "--size", 32],
                          ["ingest", src / "typo.mp4", "--out", other, "--frames", 16, "--size", 32])
    for r, d in ((good, data), (typo, other)):
        line = refused(r, d, "shard-00000.parquet")
        assert "nothing was deleted" in line
    assert snapshot(data) == before == snapshot(other)


def test_ingest_keeps_files_it_did_not_write(made: tuple[Path, Path], data: Path) -> None:
    src, _ = made
    shutil.copy(data / "shard-00000.parquet", data / "shard-00042.parquet")  # not listed in the manifest
    (data / "notes.tmp").write_text("mine")  # ends like a vidgan 0.1 temp file, is not one
    (data / ".shard-00009.parquet.x.vidgan-tmp").write_bytes(b"half a shard")  # ours: atomic_write's temp
    (data / "shard-00007.parquet.tmp").write_bytes(b"half a shard")  # ours: a vidgan 0.1 temp
    before = snapshot(data)
    (r,) = cli_many(["ingest", src, "--out", data, "--frames", 16, "--size", 32])
    refused(r, "shard-00042.parquet")
    assert snapshot(data) == before  # nothing deleted, not even our own temp files
    (data / "shard-00042.parquet").rename(data.parent / "moved.parquet")  # the advice: move it away
    ingest([str(src)], data, CFG)
    left = snapshot(data)
    assert left["notes.tmp"] == b"mine"
    assert ".shard-00009.parquet.x.vidgan-tmp" not in left and "shard-00007.parquet.tmp" not in left


def test_ingest_bad_or_inconsistent_manifest(made: tuple[Path, Path], data: Path, tmp_path: Path) -> None:
    src, _ = made
    broken = shutil.copytree(data, tmp_path / "broken")
    (broken / "manifest.json").write_text('{"schema_version": 1, "shards": [')
    listy = shutil.copytree(data, tmp_path / "listy")
    (listy / "manifest.json").write_text("[]")
    (data / "shard-00001.parquet").unlink()  # a listed shard lost
    short = shutil.copytree(data, tmp_path / "short")
    shutil.copy(src.parent / "shards" / "shard-00001.parquet", short / "shard-00001.parquet")
    with open(short / "shard-00002.parquet", "r+b") as f:
        f.truncate(1000)
    befores = [snapshot(d) for d in (broken, listy, data, short)]
    rs = cli_many(*(["ingest", src, "--out", d, "--frames", 16, "--size", 32] for d in (broken, listy, data, short)))
    for r, d in zip(rs[:2], (broken, listy), strict=True):
        line = refused(r, d / "manifest.json")
        assert "remove" not in line.lower() and "delete" not in line.lower()
    assert "shard-00001.parquet" in refused(rs[2], "missing")
    assert "shard-00002.parquet" in refused(rs[3], "1000 bytes")
    assert [snapshot(d) for d in (broken, listy, data, short)] == befores


def test_interrupted_commit_is_completed_not_redone(made: tuple[Path, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the 2nd shard was renamed into place but before the manifest listed it: the next run proves the
    shard is its own (size and sha256 recorded beforehand) and keeps it; its sources are not decoded again."""
    import vidgan.ingest.pipeline as pipeline
    import vidgan.ingest.writer as writer

    src, clean = made
    real_write = writer.write_manifest

    def killed_at_commit_of_2nd_shard(out: Path, manifest: dict) -> None:
        if len(manifest["shards"]) == 2 and "pending" not in manifest:
            raise KeyboardInterrupt
        real_write(out, manifest)

    monkeypatch.setattr(writer, "write_manifest", killed_at_commit_of_2nd_shard)
    with pytest.raises(KeyboardInterrupt):
        ingest([str(src)], tmp_path / "out", CFG)
    monkeypatch.setattr(writer, "write_manifest", real_write)
    orphan = (tmp_path / "out" / "shard-00001.parquet").read_bytes()
    assert len(read_manifest(str(tmp_path / "out"))["shards"]) == 1

    calls: list[str] = []
    real_decode = pipeline.decode_source
    monkeypatch.setattr(pipeline, "decode_source", lambda s, c: calls.append(s.key) or real_decode(s, c))
    m = ingest([str(src)], tmp_path / "out", CFG)
    assert calls == ["v2.mp4"]  # v1's clips are in the kept shard-00001
    assert (tmp_path / "out" / "shard-00001.parquet").read_bytes() == orphan
    assert m["totals"] == read_manifest(str(clean))["totals"] and "pending" not in m
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in clean.iterdir())


# --------------------------------------------------------------------------- 2. train overwrites nothing


def test_train_refuses_to_overwrite_or_ignore_flags(data: Path, tmp_path: Path) -> None:
    ck = new_checkpoint(tmp_path / "ck.pt")
    ck2 = Path(shutil.copy(ck, tmp_path / "ck2.pt"))  # its own file: one `vidgan train` writes a checkpoint at a time
    before = ck.read_bytes()
    plain, conflict = cli_many(
        ["train", "--data", data, "--checkpoint", ck, *TRAIN],
        ["train", "--data", data, "--checkpoint", ck2, *TRAIN, "--resume", "--lr", "0.5", "--variant", "sn"],
    )
    assert "--overwrite" in refused(plain, ck, "--resume")
    line = refused(conflict, ck2, "--lr", "--variant")
    assert "--batch-size" not in line and "--width" not in line  # given, but equal to the checkpoint's
    assert ck.read_bytes() == before == ck2.read_bytes()


# -------------------------------------------------------------------------- 3. shards verified before use


def test_flipped_byte_caught_before_training(made: tuple[Path, Path], data: Path, tmp_path: Path) -> None:
    from vidgan.data import arrow_clip_batches
    from vidgan.ray_stream import ray_clip_batches
    from vidgan.shards import ShardError, verified

    verified(str(data))  # verified once in this process: a later change must still be caught
    shard = data / "shard-00001.parquet"
    flip(shard, shard.stat().st_size // 2)  # one byte inside clip data, which lz4 decodes without complaint
    for read in (lambda: next(iter_clips(str(data))), lambda: arrow_clip_batches(str(data), 2),
                 lambda: ray_clip_batches(str(data), 2)):
        with pytest.raises(ShardError, match="shard-00001.parquet.*sha256"):
            read()
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()  # refused before Ray started

    big = shutil.copytree(data, tmp_path / "big")
    shutil.copy(made[1] / "shard-00001.parquet", big / "shard-00001.parquet")
    flip(big / "shard-00002.parquet", 4, 64 * 1024 - 8)  # 64 KiB: gave `OSError: Corrupt Lz4` before
    a, b = cli_many(["train", "--data", data, *TRAIN], ["train", "--data", big, *TRAIN])
    refused(a, data / "shard-00001.parquet", "sha256")
    assert "Corrupt" not in refused(b, big / "shard-00002.parquet", "sha256")


def test_shards_hashed_once_per_version_not_per_reader(data: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard is hashed once per node (a stamp in the cache) and not at all in a process the driver vouched
    for; any rewrite of it, even one that restores its size and mtime, is hashed again and caught."""
    from vidgan import shards

    monkeypatch.setenv("VIDGAN_CACHE", str(tmp_path / "cache"))
    hashed: list[str] = []
    real_hash = shards._sha256_fs
    monkeypatch.setattr(shards, "_sha256_fs", lambda fs, p: hashed.append(Path(p).name) or real_hash(fs, p))

    def new_process() -> None:  # a process starts with no stamps of its own
        monkeypatch.setattr(shards, "_VERIFIED", set())

    new_process()
    shards.verified(str(data))
    assert sorted(hashed) == [f"shard-0000{i}.parquet" for i in range(3)]
    driver = shards.verified_stamps()
    new_process()
    shards.verified(str(data))  # another trial on this node: the node's stamps
    assert len(hashed) == 3
    monkeypatch.setenv("VIDGAN_CACHE", str(tmp_path / "other-node"))
    new_process()
    shards.trust(driver)  # a trial on another node, handed the driver's stamps
    shards.verified(str(data))
    assert len(hashed) == 3

    shard = data / "shard-00001.parquet"
    st = shard.stat()
    flip(shard, st.st_size // 2)
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only the ctime tells
    for fresh in (False, True):
        if fresh:
            new_process()
            shards.trust(driver)
        with pytest.raises(shards.ShardError, match="shard-00001.parquet.*sha256"):
            shards.verified(str(data))
    assert hashed[3:] == ["shard-00001.parquet"] * 2


def test_manifest_checksums_and_names_are_enforced(data: Path, tmp_path: Path) -> None:
    from vidgan.shards import ShardError, verified

    m = json.loads((data / "manifest.json").read_text())
    good = json.dumps(m)
    m["shards"][0]["sha256"] = "0" * 64  # a wrong checksum in the manifest
    (data / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ShardError, match="shard-00000.parquet"):
        list(iter_clips(str(data)))
    outside = tmp_path / "outside.parquet"
    shutil.copy(data / "shard-00000.parquet", outside)
    for name in ("../outside.parquet", str(outside), "sub/../../outside.parquet"):
        m = json.loads(good)
        m["shards"][0]["file"] = name
        (data / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(ManifestError, match="leaves the shard directory"):
            verified(str(data))


def test_sweep_refuses_a_damaged_dataset_before_any_trial(data: Path) -> None:
    from tune_jobs.spec import SpecError, parse_spec
    from tune_jobs.sweep import prepare_datasets

    spec = parse_spec({"name": "s", "datasets": [{"name": "d", "path": str(data)}], "variants": ["gp"],
                       "model": {"frames": 16, "size": 32}, "train": {"batch_size": 2},
                       "eval": {"every": 1, "n_real": 2, "n_fake": 2, "frames": 9}, "scheduler": {"max_t": 2}})
    prepare_datasets(spec)
    flip(data / "shard-00002.parquet", 5000)
    with pytest.raises(SpecError, match="dataset 'd': .*shard-00002.parquet: sha256"):
        prepare_datasets(spec)
    (data / "file").write_text("not a folder")
    spec = spec.model_copy(update={"datasets": [spec.datasets[0].model_copy(update={"path": str(data / "file" / "x"),
                                                                                    "sample": True})]})
    with pytest.raises(SpecError, match="dataset 'd': .*not writable"):  # the sample cannot be built there
        prepare_datasets(spec)


def test_sweep_to_an_address_nobody_answers_is_one_line(data: Path, tmp_path: Path) -> None:
    """ray.init retries such an address for minutes; the sweep says so in one line within seconds."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({
        "name": "s", "datasets": [{"name": "d", "path": str(data)}], "variants": ["gp"],
        "model": {"frames": 16, "size": 32}, "train": {"batch_size": 2}, "storage_path": str(tmp_path / "runs"),
        "eval": {"every": 1, "n_real": 2, "n_fake": 2, "frames": 9}, "scheduler": {"max_t": 2},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}))
    t = time.perf_counter()
    (r,) = cli_many(["sweep", spec, "--address", f"127.0.0.1:{port}"])
    refused(r, f"no Ray cluster answers at 127.0.0.1:{port}")
    assert time.perf_counter() - t < 120


def test_fvd_verifies_real_and_fake_shards_and_checkpoints(data: Path, tmp_path: Path) -> None:
    """Refused before any I3D work: the real features are never computed from a damaged shard."""
    bad = shutil.copytree(data, tmp_path / "bad")
    flip(bad / "shard-00000.parquet", (bad / "shard-00000.parquet").stat().st_size // 2)
    v99 = new_checkpoint(tmp_path / "v99.pt", version=99)
    cached = shutil.copytree(data, tmp_path / "cached")
    from vidgan.fvd.stats import stats_location

    garbage = Path(stats_location(str(cached), 2, 9))
    garbage.parent.mkdir()
    garbage.write_bytes(b"PK\x03\x04 not really a zip")  # a damaged statistics cache
    common = ["--n", 2, "--frames", 9, "--device", "cpu"]
    stats, fake, ckpt, cache = cli_many(
        ["fvd", "--stats", bad, *common], ["fvd", "--real", data, "--fake", bad, *common],
        ["fvd", "--real", data, "--checkpoint", v99, *common], ["fvd", "--stats", cached, *common])
    refused(stats, bad / "shard-00000.parquet", "sha256")
    refused(fake, bad / "shard-00000.parquet", "sha256")
    refused(ckpt, v99, "version 99")
    refused(cache, garbage, "unreadable")
    assert not list(data.glob("fvd_stats/*.npz")) and not list(bad.glob("fvd_stats/*.npz"))


# ------------------------------------------------------------------------------------ 4. one-line errors


def test_bad_checkpoints_are_refused_by_name(tmp_path: Path) -> None:
    from vidgan.trainer import CheckpointError, Trainer, load_generator, read_checkpoint

    raw = new_checkpoint(tmp_path / "good.pt").read_bytes()
    marker = tmp_path / "pwned"
    files = {"trunc.pt": raw[: len(raw) // 2], "empty.pt": b"", "text.pt": b"hello", "missing.pt": None}
    for name, content in files.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
    torch.save({"version": 1, "x": Evil(marker)}, tmp_path / "evil.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    new_checkpoint(tmp_path / "v99.pt", version=99)
    torch.save({"version": 1, "config": {}}, tmp_path / "hollow.pt")
    expected = {"trunc.pt": "truncated", "empty.pt": "empty file", "text.pt": "not a torch checkpoint",
                "missing.pt": "does not exist", "evil.pt": "refused", "list.pt": "holds a list",
                "v99.pt": "version 99", "hollow.pt": "not a usable vidgan checkpoint"}
    for name, words in expected.items():
        for load in (read_checkpoint, Trainer.load, load_generator):
            if load is read_checkpoint and name == "hollow.pt":
                continue
            with pytest.raises(CheckpointError, match=words) as exc:
                load(tmp_path / name)
            assert str(tmp_path / name) in str(exc.value) and "weights_only" not in str(exc.value)
    assert not marker.exists()  # the malicious pickle never ran


def test_cli_errors_are_one_line(data: Path, tmp_path: Path) -> None:
    raw = new_checkpoint(tmp_path / "good.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    marker = tmp_path / "pwned"
    torch.save({"version": 1, "x": Evil(marker)}, tmp_path / "evil.pt")
    manifests = {"empty": "", "braces": "{}", "list": "[]", "noshards": '{"clip_shape": [16, 32, 32, 3]}',
                 "norows": '{"clip_shape": [16, 32, 32, 3], "shards": [{"file": "shard-00000.parquet"}]}'}
    for name, text in manifests.items():
        d = tmp_path / f"m-{name}"
        d.mkdir()
        (d / "manifest.json").write_text(text)
    short = shutil.copytree(data, tmp_path / "short")
    with open(short / "shard-00000.parquet", "r+b") as f:
        f.truncate(500)
    gone = shutil.copytree(data, tmp_path / "gone")
    (gone / "shard-00002.parquet").unlink()

    cases: list[tuple[list, tuple]] = [
        (["train", "--data", data, "--checkpoint", tmp_path / "trunc.pt", "--resume", *TRAIN], ("trunc.pt",)),
        (["train", "--data", data, "--checkpoint", tmp_path / "evil.pt", "--resume", *TRAIN], ("evil.pt", "refused")),
        (["fvd", "--real", tmp_path / "m-list", "--fake", data, "--n", 2, "--frames", 9], ("m-list/manifest.json",)),
        (["train", "--data", short, *TRAIN], (short / "shard-00000.parquet", "500 bytes")),
        (["train", "--data", gone, *TRAIN], (gone / "shard-00002.parquet", "missing")),
        (["train", "--data", tmp_path / "nowhere", *TRAIN], (tmp_path / "nowhere",)),
        (["train", "--data", data, "--batch-size", "0"], ("batch_size",)),
        (["train", "--data", data, "--variant", "nope"], ("nope",)),
        (["train", "--data", data, "--resume"], ("--checkpoint",)),
        (["ingest", tmp_path / "none.mp4", "--out", tmp_path / "o", "--frames", 0], ("frames",)),
    ]
    cases += [(["train", "--data", tmp_path / f"m-{name}", *TRAIN], (tmp_path / f"m-{name}" / "manifest.json",))
              for name in manifests]
    t = time.perf_counter()
    results = cli_many(*(argv for argv, _ in cases))
    print(f"{len(cases)} CLI cases in {time.perf_counter() - t:.1f} s")
    for (_, names), r in zip(cases, results, strict=True):
        line = refused(r, *names)
        assert "weights_only" not in line and "Corrupt" not in line
    assert not marker.exists()  # the malicious pickle never ran


def test_penalty_and_drift_weights_must_be_finite() -> None:
    from pydantic import ValidationError

    from tune_jobs.spec import SpecError, parse_spec
    from vidgan.variants import Variant, get_variant

    for bad in ({"penalty_weight": float("inf")}, {"penalty_weight": float("nan")}, {"drift_weight": float("inf")}):
        with pytest.raises(ValidationError, match="finite"):
            Variant(**bad)
    assert get_variant("drift", penalty_weight=1e39).penalty_weight == 1e39  # finite in float64: allowed
    spec = {"name": "s", "datasets": [{"name": "d", "path": "/x"}], "variants": ["gp"],
            "eval": {"every": 1, "n_real": 2, "n_fake": 2}, "scheduler": {"max_t": 2}}
    with pytest.raises(SpecError, match="finite"):
        parse_spec({**spec, "overrides": {"gp": {"penalty_weight": float("inf")}}})
    search = {"num_samples": 2, "space": {"penalty_weight": {"low": 1.0, "high": float("inf")}}}
    with pytest.raises(SpecError, match="finite"):  # refused when loaded, not in a trial
        parse_spec({**spec, "search": search})


def test_spec_files_refused_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from tune_jobs.spec import SpecError, load_spec

    huge = tmp_path / "huge.yaml"
    huge.write_text("seeds:\n" + "- 1\n" * 600_000)  # 2.4 MB: it would parse for seconds
    parsed = []
    with monkeypatch.context() as m:  # refused by its size: YAML never reads it (checked by that, not by a clock)
        m.setattr(yaml, "safe_load", lambda *a, **k: parsed.append(a) or {})
        with pytest.raises(SpecError, match="huge.yaml.*1 MiB"):
            load_spec(huge)
    assert parsed == []
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError, match="latin1.yaml.*UTF-8"):
        load_spec(tmp_path / "latin1.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\nvariants: x\n")
    with pytest.raises(SpecError, match="bad.yaml") as exc:
        load_spec(tmp_path / "bad.yaml")
    assert "\n" not in str(exc.value)


# ------------------------------------------------------------------------------------------ 5. credentials


def _spec_file(tmp_path: Path, tracking_uri: str) -> Path:
    spec = {"name": "creds", "datasets": [{"name": "d", "path": "s3://AKIDSECRET:hunter2@bucket/clips"}],
            "model": {"frames": 16, "size": 32}, "variants": ["gp"],
            "eval": {"every": 1, "n_real": 2, "n_fake": 2, "frames": 9}, "scheduler": {"max_t": 2},
            "mlflow": {"tracking_uri": tracking_uri}}
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def test_tracking_password_never_printed(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = _spec_file(tmp_path, f"http://alice:s3cr%40t@127.0.0.1:{port}")
    (r,) = cli_many(["sweep", spec])
    line = refused(r, f"http://127.0.0.1:{port}", "unreachable")
    assert "s3cr" not in r.stderr + r.stdout and "alice" not in r.stderr + r.stdout, line


class _MlflowStub(http.server.BaseHTTPRequestHandler):
    """Answers the two requests check_tracking makes and records their Authorization headers."""

    seen: list[tuple[str, str | None]] = []

    def _answer(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        body = b"OK" if self.path == "/health" else b'{"experiments": []}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def test_tracking_credentials_passed_as_mlflow_expects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tune_jobs import tracking
    from tune_jobs.spec import load_spec
    from tune_jobs.sweep import spec_params

    for var in (*tracking.AUTH_ENV, "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MlflowStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        uri = tracking.resolve_tracking_uri(f"http://alice:s3cr%40t@127.0.0.1:{port}")
        assert uri == f"http://127.0.0.1:{port}"
        tracking.check_tracking(uri)
    finally:
        server.shutdown()
    expected = "Basic " + base64.b64encode(b"alice:s3cr@t").decode()
    assert _MlflowStub.seen and all(auth == expected for _, auth in _MlflowStub.seen), _MlflowStub.seen
    assert tracking.auth_env() == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": "s3cr@t"}
    ctx = tracking.SweepContext(spec=None, sweep="s", tracking_uri=uri, experiment_id="1", parent_run_id="p",
                                auth_env=tracking.auth_env())
    assert "s3cr" not in repr(ctx)
    params = tracking.flatten({"spec": spec_params(load_spec(_spec_file(tmp_path, f"http://alice:s3cr%40t@h:{port}")))})
    assert params["spec.mlflow.tracking_uri"] == f"http://h:{port}"
    assert not any(("s3cr" in v or "alice" in v or "hunter2" in v) for v in params.values()), params


# ------------------------------------------------- 6. concurrent writers, bounded resources, the rest (#19)


def _source_folder(root: Path, n: int, prefix: str, frames: int = 32) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_video(root / f"{prefix}{i}.mp4", frames=frames, width=40, height=32)
    return root


def test_one_ingest_per_out_folder(tmp_path: Path) -> None:
    """#19 case 1: two ingests of different sources into one --out at once lose nothing: the second stops naming
    the first (or runs after it), and running it again adds its sources."""
    from vidgan.shards import verified

    a, b = _source_folder(tmp_path / "a", 4, "a"), _source_folder(tmp_path / "b", 4, "b")
    out = tmp_path / "out"
    ingest_a, ingest_b = (["ingest", s, "--out", out, "--frames", 16, "--size", 32, "--shard-mb", 0.01]
                          for s in (a, b))
    results = cli_many(ingest_a, ingest_b)
    for argv, r in zip((ingest_a, ingest_b), results, strict=True):
        if r.returncode != 0:  # the other one held the folder: one line naming it, then it runs after
            refused(r, out, "is being written by vidgan ingest (pid")
            (again,) = cli_many(argv)
            assert again.returncode == 0, again.stderr
    m = read_manifest(str(out))
    assert sorted(m["sources"]) == sorted([f"a{i}.mp4" for i in range(4)] + [f"b{i}.mp4" for i in range(4)])
    assert m["totals"]["clips"] == 16 and len({s["file"] for s in m["shards"]}) == 8
    verified(str(out))  # every listed shard whole, none overwritten by the other run
    assert not list(out.glob(".*vidgan-lock"))

    from vidgan.files import writer_lock

    before = snapshot(out)
    with writer_lock(out, folder=True, command="a test holding the folder"):  # the second writer, for certain
        (held,) = cli_many(ingest_a)
    line = refused(held, out, f"pid {os.getpid()}", "a test holding the folder")
    assert "run this command again" in line and snapshot(out) == before


def test_one_train_per_checkpoint(data: Path, tmp_path: Path) -> None:
    """#19 case 2: two `vidgan train` on one new --checkpoint at once: exactly one trains it; the other stops with
    one line (naming the holder, or the checkpoint it finds), and nothing is replaced without --overwrite."""
    from vidgan.trainer import read_checkpoint

    ck = tmp_path / "ck.pt"
    runs = cli_many(*(["train", "--data", data, "--checkpoint", ck, *TRAIN, "--seed", seed] for seed in (1, 2)))
    assert sorted(r.returncode for r in runs) == [0, 2], [(r.returncode, r.stderr) for r in runs]
    winner = 1 if runs[0].returncode == 0 else 2
    loser = runs[1] if winner == 1 else runs[0]
    line = refused(loser, ck)
    assert "is being written by vidgan train (pid" in line or "--overwrite" in line, line
    assert read_checkpoint(ck)["config"]["train"]["seed"] == winner

    from vidgan.files import writer_lock

    fresh = tmp_path / "fresh.pt"
    with writer_lock(fresh, command="a test holding the checkpoint"):  # the second writer, for certain
        (held,) = cli_many(["train", "--data", data, "--checkpoint", fresh, *TRAIN])
    refused(held, fresh, f"pid {os.getpid()}", "a test holding the checkpoint")
    assert not fresh.exists()


def _hollow_checkpoint(path: Path, **model: int) -> Path:
    """A checkpoint of a few KB whose config asks for ``model`` (all inside the schema) and holds no weights."""
    from vidgan.config import ModelConfig, TrainConfig
    from vidgan.variants import get_variant

    torch.save({"version": 1, "config": {"model": ModelConfig(**model).model_dump(),
                                         "variant": get_variant("gp").model_dump(),
                                         "train": TrainConfig(batch_size=64).model_dump()}}, path)
    return path


def test_models_that_would_not_fit_are_refused_before_allocating(data: Path, tmp_path: Path) -> None:
    """#19 case 3: a 2 KB checkpoint (or a spec) asking for width 1024, z_dim 4096, 32x128x128 clips is refused in
    one line with the estimate, before any allocation (each process is capped at 6 GiB, so the old behaviour, a
    17 GB allocation, cannot take the machine's memory)."""
    huge = {"width": 1024, "z_dim": 4096, "frames": 32, "size": 128, "edges": "replicate"}  # kernel-4 deconvolutions
    ck = _hollow_checkpoint(tmp_path / "huge.pt", **huge)
    assert ck.stat().st_size < 4096
    spec = tmp_path / "huge.yaml"
    spec.write_text(json.dumps({"name": "huge", "datasets": [{"name": "d", "path": str(data)}], "variants": ["gp"],
                                "model": huge, "train": {"batch_size": 64}, "storage_path": str(tmp_path / "runs"),
                                "eval": {"every": 1, "n_real": 2, "n_fake": 2, "frames": 9},
                                "scheduler": {"max_t": 2}, "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/m.db"}}))
    t = time.perf_counter()
    train, fvd, sweep = cli_many(["train", "--data", data, "--checkpoint", ck, "--resume", "--device", "cpu"],
                                 ["fvd", "--real", data, "--checkpoint", ck, "--n", 2, "--frames", 9],
                                 ["sweep", spec, "--check"], memory_gib=6)
    for r, words in ((train, (ck, "GiB for training")), (fvd, (ck, "GiB for sampling")),
                     (sweep, ("sweep huge: model", "GiB for training"))):
        line = refused(r, *words, "would not fit", "7.1G + critic 2.8G parameters")
        assert "refused before allocating" in line
    assert time.perf_counter() - t < 90


def test_timestamp_gap_is_bounded_by_frames_produced(tmp_path: Path) -> None:
    """#19 case 4: a few-KB video with a 10^6 s timestamp gap, resampled to 25 fps, stops at --max-frames frames
    produced (repeats included) instead of repeating one frame 25 million times (capped at 3 GiB here)."""
    from videogen import write_gap_video

    src = write_gap_video(tmp_path / "gap.mkv")
    assert src.stat().st_size < 10_000
    out = tmp_path / "out"
    t = time.perf_counter()
    (r,) = cli_many(["ingest", src, "--out", out, "--fps", 25, "--max-frames", 100, "--frames", 16, "--size", 32],
                    memory_gib=3, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    entry = read_manifest(str(out))["sources"]["gap.mkv"]
    assert entry["status"] == "ok" and entry["clips"] == 100 // 16, entry
    assert "cap of 100 frames" in entry["warning"]
    assert time.perf_counter() - t < 60


class _SilentMlflow(http.server.BaseHTTPRequestHandler):
    """Answers /health, then never answers an API request (a hung server or its database)."""

    release = threading.Event()

    def do_GET(self) -> None:
        if self.path != "/health":
            self.release.wait(300)
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def do_POST(self) -> None:
        self.release.wait(300)

    def log_message(self, *args: object) -> None:
        pass


def test_check_and_sweep_time_out_on_a_silent_tracking_server(data: Path, tmp_path: Path) -> None:
    """#19 case 5: a tracking server that answers /health and then goes silent: `--check` and the sweep end with
    one line within the timeout (VIDGAN_TRACKING_TIMEOUT_S, 3 s here) instead of hanging in MLflow's retries."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SilentMlflow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        spec = tmp_path / "s.yaml"
        spec.write_text(json.dumps({
            "name": "s", "datasets": [{"name": "d", "path": str(data)}], "variants": ["gp"],
            "model": {"frames": 16, "size": 32}, "train": {"batch_size": 2}, "storage_path": str(tmp_path / "runs"),
            "eval": {"every": 1, "n_real": 2, "n_fake": 2, "frames": 9}, "scheduler": {"max_t": 2},
            "mlflow": {"tracking_uri": f"http://127.0.0.1:{port}"}}))
        t = time.perf_counter()
        (check,) = cli_many(["sweep", spec, "--check"], env={"VIDGAN_TRACKING_TIMEOUT_S": "3"}, timeout=100)
        refused(check, f"http://127.0.0.1:{port}", "did not answer an API request", "within 3 s")  # a sweep: the same
        assert time.perf_counter() - t < 60
    finally:
        _SilentMlflow.release.set()
        server.shutdown()


def test_credentials_with_any_characters_never_printed(tmp_path: Path) -> None:
    """#19 case 6: a password holding "/" or "#" (AWS secret keys hold "/") in a URI's userinfo is never printed,
    also where it makes the URI ill-formed."""
    import socket

    from vidgan.files import split_userinfo

    assert split_userinfo("http://alice:hun/ter#2@h:5000") == ("http://h:5000", "alice", "hun/ter#2")
    assert split_userinfo("s3://AKID:se/cr+et@bucket/clips") == ("s3://bucket/clips", "AKID", "se/cr+et")
    assert split_userinfo("s3://bucket/dir/a@b.parquet") == ("s3://bucket/dir/a@b.parquet", None, None)
    assert split_userinfo("http://h:5000/x@y") == ("http://h:5000/x@y", None, None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = _spec_file(tmp_path, f"http://alice:hun/ter#2@127.0.0.1:{port}")
    raw = json.loads(spec.read_text())
    raw["datasets"][0]["path"] = "s3://AKID:se/cr+et@bucket/clips"
    spec.write_text(json.dumps(raw))
    (r,) = cli_many(["sweep", spec])  # `--check` goes the same way
    refused(r, f"http://127.0.0.1:{port}", "unreachable")
    for secret in ("hun", "ter#2", "alice", "se/cr", "cr+et"):
        assert secret not in r.stderr + r.stdout, (secret, r.stderr)


def _unshare_ok() -> bool:
    try:
        return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def test_full_disk_during_a_save_is_one_line(data: Path, tmp_path: Path) -> None:
    """#19 case 7: the disk fills during a checkpoint save (a 4 MiB tmpfs, filled, in a private mount namespace;
    without user namespaces, a file-size limit fails the write the same way): one line saying what was kept and
    how to go on; the previous checkpoint is intact and no temporary file is left."""
    ck = new_checkpoint(tmp_path / "ck.pt")
    disk, report = tmp_path / "disk", tmp_path / "report"
    disk.mkdir()
    report.mkdir()
    argv = [sys.executable, "-m", "vidgan.cli", "train", "--data", str(data), "--checkpoint", str(disk / "ck.pt"),
            "--resume", *TRAIN[:-3], "2", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    if _unshare_ok():
        script = (f'mount -t tmpfs -o size=4m tmpfs "{disk}" && cp "{ck}" "{disk}/ck.pt" '
                  f'&& (dd if=/dev/zero of="{disk}/fill" bs=64k 2>/dev/null || true) '
                  f'&& "$@" 2>"{report}/err"; echo $? >"{report}/rc"; '
                  f'cp "{disk}/ck.pt" "{report}/ck.pt"; ls -a "{disk}" >"{report}/ls"')
        subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", *argv],
                       env=env, timeout=300, check=True)
        err, rc = (report / "err").read_text(), int((report / "rc").read_text())
        left = (report / "ls").read_text().split()
        assert "the disk is full" in err, err
    else:
        import shutil as sh

        sh.copy(ck, disk / "ck.pt")
        limit = ck.stat().st_size // 2
        p = warm_cli.run("vidgan.cli", argv[3:], env=env, rlimits={"RLIMIT_FSIZE": limit}, timeout=120)
        err, rc, left = p.stderr, p.returncode, os.listdir(disk)
        sh.copy(disk / "ck.pt", report / "ck.pt")
    line = refused(subprocess.CompletedProcess(argv, rc, "", err), disk / "ck.pt", "could not save checkpoint",
                   "at iteration 2", "(iteration 0) is kept", "--resume")
    assert "unexpected pos" not in line
    assert (report / "ck.pt").read_bytes() == ck.read_bytes()
    assert not [n for n in left if n.endswith(".vidgan-tmp")], left


def test_ctrl_c_during_ingest_is_one_line_and_resumes(tmp_path: Path) -> None:
    """#19 case 7: Ctrl-C in the middle of `vidgan ingest`: one line saying what was kept and how to resume, no
    traceback; the same command again decodes only the rest."""
    import signal

    src = tmp_path / "src"
    _source_folder(src, 2, "a")
    # three long sources (~1.5 s of decoding each on this machine) after the two short ones: the ingest is still
    # decoding when the test stops it below, also when the machine is busy and this loop polls late
    write_video(src / "b_long0.mp4", frames=6000, width=32, height=32)
    for i in (1, 2):
        shutil.copy(src / "b_long0.mp4", src / f"b_long{i}.mp4")
    write_video(src / "c.mp4", frames=32, width=40, height=32)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "vidgan.cli", "ingest", str(src), "--out", str(out), "--frames", "16",
            "--size", "32", "--shard-mb", "0.01", "--parallel", "local"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def manifest() -> dict:
        try:
            return json.loads((out / "manifest.json").read_text())
        except (OSError, ValueError):  # not written yet
            return {"shards": [], "sources": {}}

    def shards() -> int:
        return len(manifest()["shards"])

    p = warm_cli.popen("vidgan.cli", argv[3:], env=env)  # its own process, signalled below
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and p.poll() is None and shards() < 2:
        time.sleep(0.01)
    # Ctrl-C where the ingest is, whatever it did since: stopped (SIGSTOP), its manifest read, SIGINT, continued.
    # The line must name the shards the manifest holds at that moment, however far the ingest got.
    p.send_signal(signal.SIGSTOP)
    kept, done = shards(), len(manifest()["sources"])
    assert p.poll() is None and kept < 6, f"the ingest ended before Ctrl-C ({kept} shards): it ran too fast"
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGCONT)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 130, (p.returncode, stderr)
    line = [x for x in stderr.splitlines() if "source(s) to decode" not in x]
    assert "Traceback" not in stderr and len(line) == 1, stderr
    assert "interrupted" in line[0] and f"keeps {kept} whole shard(s)" in line[0] and "run the same command again" \
        in line[0], (kept, line[0])
    for i in (1, 2):  # fewer sources to decode on the rerun: what it reads is what is left, whatever that is
        (src / f"b_long{i}.mp4").unlink()
    again = warm_cli.run("vidgan.cli", argv[3:], env=env, timeout=300)
    assert again.returncode == 0 and f"{done} already in the manifest" in again.stderr, again.stderr
    assert sorted(read_manifest(str(out))["sources"]) == ["a0.mp4", "a1.mp4", "b_long0.mp4", "c.mp4"]


def test_storage_path_checked_and_failed_start_marks_parent_failed(data: Path, tmp_path: Path) -> None:
    """#19 case 8: `--check` refuses a storage_path it cannot create (a file, a path under a file); a sweep that fails
    to start after opening its MLflow parent run marks it FAILED with the reason."""
    from mlflow import MlflowClient

    from tune_jobs import sweep, tracking
    from tune_jobs.spec import SpecError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({
        "name": "s", "datasets": [{"name": "d", "path": str(data)}], "variants": ["gp"],
        "model": {"frames": 16, "size": 32}, "train": {"batch_size": 2}, "storage_path": str(blocker),
        "eval": {"every": 1, "n_real": 2, "n_fake": 2, "frames": 9}, "scheduler": {"max_t": 2},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}))
    (check,) = cli_many(["sweep", spec, "--check"])
    refused(check, f"storage_path {blocker}", "is a file")
    with pytest.raises(SpecError, match=f"storage_path {blocker}/runs cannot be created: {blocker} is a file"):
        sweep.check_storage(str(blocker / "runs"))
    sweep.check_storage(str(tmp_path / "new" / "runs"))  # a folder it can make: fine, and not made by the check
    assert not (tmp_path / "new").exists()

    uri = empty_store(tmp_path / "mlflow.db")  # a copy of an empty store MLflow made (making one takes ~3 s)
    experiment = tracking.ensure_experiment(uri, "s")
    parent = tracking.start_parent_run(uri, experiment, "s-1")
    with pytest.raises(OSError), sweep.parent_failed_on_error(uri, parent):
        sweep._write_state(str(blocker / "s-1"), {"parent_run_id": parent})  # what a sweep writes first
    run = MlflowClient(uri).get_run(parent)
    assert run.info.status == "FAILED"
    assert run.data.tags[tracking.TAG_END] == "failed" and "a-file" in run.data.tags[tracking.TAG_REASON]


def test_stale_temp_files_removed_by_the_next_owner(data: Path, tmp_path: Path) -> None:
    """#19 case 9: a run killed mid-save leaves `.ck.pt.<random>.vidgan-tmp`; the next run that writes ck.pt (it holds
    ck.pt's lock, so nobody else is writing them) removes them, and nothing else."""
    ck = tmp_path / "ck.pt"
    stale = tmp_path / ".ck.pt.k1ll3d00.vidgan-tmp"
    stale.write_bytes(b"\0" * (5 << 20))  # what a save SIGKILLed half-way leaves
    others = {".other.pt.k1ll3d00.vidgan-tmp": b"another checkpoint's", ".ck.pt.notes": b"mine", "ck.pt.tmp": b"mine"}
    for name, content in others.items():
        (tmp_path / name).write_bytes(content)
    (r,) = cli_many(["train", "--data", data, "--checkpoint", ck, *TRAIN])
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and ck.is_file()
    assert all((tmp_path / n).read_bytes() == c for n, c in others.items())
    assert not list(tmp_path.glob(".*vidgan-lock"))


def test_reingest_verifies_listed_shards_by_hash(made: tuple[Path, Path], data: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """#19 case 10: a listed shard altered in place (same size) is caught when the ingest resumes."""
    from vidgan.ingest import IngestError

    monkeypatch.setenv("VIDGAN_CACHE", str(tmp_path / "cache"))
    src, _ = made
    shard = data / "shard-00001.parquet"
    flip(shard, shard.stat().st_size // 2)
    before = snapshot(data)
    with pytest.raises(IngestError, match="shard-00001.parquet: sha256 differs.*nothing was changed"):
        ingest([str(src)], data, CFG)
    assert snapshot(data) == before


def test_cached_real_statistics_need_verified_shards(data: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """#19 case 10: FVD's cached real statistics stand for the shards their manifest lists: a damaged real shard is
    noticed also when the cache answers (before: the cache was used and the shard never read)."""
    import numpy as np

    from vidgan.fvd import stats
    from vidgan.fvd.weights import WEIGHTS_SHA256
    from vidgan.shards import ShardError, describe

    monkeypatch.setenv("VIDGAN_CACHE", str(tmp_path / "cache"))
    meta = {"manifest_sha256": describe(str(data)).manifest_sha256, "frames": 9, "n": 2,
            "weights_sha256": WEIGHTS_SHA256, "features": stats.FEATURE_TAG}
    feats = np.random.default_rng(0).normal(size=(2, 400))
    path = Path(stats.stats_location(str(data), 2, 9))
    path.parent.mkdir()
    np.savez(path, features=feats, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False),
             meta=np.array(json.dumps(meta, sort_keys=True)))
    assert np.array_equal(stats.real_features(str(data), 2, 9), feats)  # the cache answers for intact shards
    flip(data / "shard-00000.parquet", (data / "shard-00000.parquet").stat().st_size // 2)
    with pytest.raises(ShardError, match="shard-00000.parquet.*sha256"):
        stats.real_features(str(data), 2, 9)


def test_verified_stamps_writable_by_others_are_ignored(data: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """#19 case 10: whoever can write $VIDGAN_CACHE could vouch for a shard they altered by creating its stamp; a
    stamp counts only when this user owns it and nobody else can write it or its folders (else a warning and a
    hash)."""
    from vidgan import shards

    monkeypatch.setenv("VIDGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shards, "_VERIFIED", set())
    monkeypatch.setattr(shards, "_UNTRUSTED", set(), raising=False)
    shards.verified(str(data))
    stamp_root = tmp_path / "cache" / shards.STAMP_DIR
    assert all(p.stat().st_mode & 0o777 == 0o755 for p in (stamp_root, *stamp_root.iterdir()))  # whatever the umask

    shard = data / "shard-00001.parquet"
    entry = json.loads((data / "manifest.json").read_text())["shards"][1]
    flip(shard, shard.stat().st_size // 2)  # altered in place, same size
    import pyarrow.fs as pafs

    fs = pafs.LocalFileSystem()
    forged = shards._stamp_file(shards._stamp(fs, str(shard), fs.get_file_info(str(shard)), entry["sha256"]))
    for how in ("file", "folder"):
        monkeypatch.setattr(shards, "_VERIFIED", set())  # a new process: only the stamp files speak
        forged.parent.mkdir(parents=True, exist_ok=True)
        forged.touch()
        if how == "file":
            forged.chmod(0o666)  # anyone may have made it
        else:
            forged.chmod(0o644)
            forged.parent.chmod(0o777)  # anyone may add stamps to this folder
        with caplog.at_level("WARNING", logger="vidgan.shards"), \
                pytest.raises(shards.ShardError, match="shard-00001.parquet.*sha256"):
            shards.verified(str(data))
        assert "writable by others" in caplog.text
        forged.parent.chmod(0o755)
        monkeypatch.setattr(shards, "_UNTRUSTED", set(), raising=False)
        caplog.clear()
    forged.chmod(0o644)
    monkeypatch.setattr(shards, "_VERIFIED", set())
    shards.verified(str(data))  # the same stamp, this user's alone: trusted (what the check exists to allow)
