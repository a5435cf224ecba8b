"""Hostile inputs (#12): nothing is lost, damaged data is caught before use, and every command answers a bad
input with one line on stderr naming the file, exit status 2 and no traceback (CLIs run as subprocesses).

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
from videogen import write_video

from vidgan.ingest import IngestConfig, ingest
from vidgan.shards import ManifestError, iter_clips, read_manifest

CFG = IngestConfig(frames=16, size=32, shard_mb=0.01, parallel="local")  # one shard per source
TRAIN = ["--width", "4", "--batch-size", "2", "--n-critic", "1", "--iterations", "1", "--device", "cpu"]


# ----------------------------------------------------------------------------------------------- helpers


def cli_many(*argvs: list[str]) -> list[subprocess.CompletedProcess]:
    """Run ``python -m tune_jobs.main ARGV`` (``vidgan ARGV``) for each argv at once (processes overlap imports)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-m", "tune_jobs.main", *map(str, a)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for a in argvs]
    out = []
    for p, a in zip(procs, argvs, strict=True):
        stdout, stderr = p.communicate(timeout=180)
        out.append(subprocess.CompletedProcess(a, p.returncode, stdout, stderr))
    return out


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


def test_ingest_refuses_shards_without_manifest(made: tuple[Path, Path], data: Path) -> None:
    src, _ = made
    (data / "manifest.json").unlink()  # a lost manifest, or a wrong --out
    before = snapshot(data)
    good, typo = cli_many(["ingest", src, "--out", data, "--frames", 16, "--size", 32],
                          ["ingest", src / "typo.mp4", "--out", data, "--frames", 16, "--size", 32])
    for r in (good, typo):
        line = refused(r, data, "shard-00000.parquet")
        assert "nothing was deleted" in line
    assert snapshot(data) == before


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
    before = ck.read_bytes()
    plain, conflict = cli_many(
        ["train", "--data", data, "--checkpoint", ck, *TRAIN],
        ["train", "--data", data, "--checkpoint", ck, *TRAIN, "--resume", "--lr", "0.5", "--variant", "sn"],
    )
    assert "--overwrite" in refused(plain, ck, "--resume")
    line = refused(conflict, ck, "--lr", "--variant")
    assert "--batch-size" not in line and "--width" not in line  # given, but equal to the checkpoint's
    assert ck.read_bytes() == before


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


def test_spec_files_refused_before_parsing(tmp_path: Path) -> None:
    from tune_jobs.spec import SpecError, load_spec

    huge = tmp_path / "huge.yaml"
    huge.write_text("seeds:\n" + "- 1\n" * 600_000)  # 2.4 MB
    t = time.perf_counter()
    with pytest.raises(SpecError, match="huge.yaml.*1 MiB"):
        load_spec(huge)
    assert time.perf_counter() - t < 1.0
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
