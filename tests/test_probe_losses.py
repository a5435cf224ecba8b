"""Issue #30's data-loss cases of the hostile probe of cb3a639, each as the smallest thing that showed it: writer
locks that are symbolic links or are removed while held (vidgan/files.py), bad lines in a tracking spool, a
corrupt ``state.json`` and a spool append on a full disk (tune_jobs/spool.py), and the permissions of the files
vidgan writes. No Ray, no MLflow server: the spool is delivered to a stand-in client.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import warm_cli

from tune_jobs import spool
from vidgan.files import WriterBusy, atomic_write_bytes, lock_path, writer_lock

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str, stdin: int | None = None) -> subprocess.Popen:
    """A Python child running ``code`` (this checkout on its path), its stdout a pipe of lines."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


# ------------------------------------------------------------------------------------------ item 1: symlinks


@pytest.mark.parametrize("folder", [False, True], ids=["checkpoint", "dataset-folder"])
def test_a_lock_file_that_is_a_symlink_is_refused_and_its_target_kept(tmp_path: Path, folder: bool) -> None:
    """#30 item 1: a lock file planted as a symbolic link to someone's file: the claim is refused in one line naming
    the lock file, and the file it points at keeps its bytes."""
    victim = tmp_path / "f"
    victim.write_text("keep\n")
    target = tmp_path / ("ds" if folder else "c.pt")
    if folder:
        target.mkdir()
    lock = lock_path(target, folder)
    lock.symlink_to(victim)
    with pytest.raises(OSError) as caught, writer_lock(target, folder=folder):
        pass
    message = str(caught.value)
    assert "symbolic link" in message and str(lock) in message and "\n" not in message, message
    assert victim.read_text() == "keep\n"
    assert lock.is_symlink()  # left for its owner to look at


def test_a_lock_file_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    """#30 item 1: a lock file that is a FIFO or has a second name (a hard link to another file) is refused too."""
    fifo_target, linked_target = tmp_path / "a.pt", tmp_path / "b.pt"
    os.mkfifo(lock_path(fifo_target))
    other = tmp_path / "other"
    other.write_text("keep\n")
    os.link(other, lock_path(linked_target))
    for target, why in ((fifo_target, "not a regular file"), (linked_target, "other names")):
        with pytest.raises(OSError, match=why), writer_lock(target):
            pass
    assert other.read_text() == "keep\n"


# ------------------------------------------------------------------------------------------ item 2: removed locks


def test_a_folder_whose_lock_file_was_removed_stays_claimed(tmp_path: Path) -> None:
    """#30 item 2: `rm ds/.vidgan-lock` while an ingest holds ds: a second ingest is refused all the same (the
    repro: both exited 0 and the manifest listed 15 of 30 sources), and nothing is written into ds."""
    from vidgan.ingest import ingest_sample

    out = tmp_path / "ds"
    with writer_lock(out, folder=True, command="a test holding the folder") as lock:
        lock.unlink()
        with pytest.raises(WriterBusy, match="is being written by"):
            ingest_sample(out, frames=16, size=32, stride=8)
        assert sorted(p.name for p in out.iterdir()) == []


def test_a_checkpoint_whose_lock_file_was_removed_is_not_replaced_by_its_first_writer(tmp_path: Path) -> None:
    """#30 item 2, train: `rm .c.pt.vidgan-lock` while a train holds c.pt lets a second one claim it (a file's lock
    can only be a file beside it); the first then stops with one line at its next save instead of replacing the
    second's checkpoint, and on its way out it leaves the second's lock file alone."""
    ck = tmp_path / "c.pt"
    first = _python("""
        import sys
        from vidgan.files import atomic_write_bytes, writer_lock
        with writer_lock(sys.argv[1], command="the first writer"):
            print("held", flush=True)
            sys.stdin.readline()
            try:
                atomic_write_bytes(sys.argv[1], b"first")
                print("wrote", flush=True)
            except OSError as e:
                print("refused", e, flush=True)
        """, str(ck), stdin=subprocess.PIPE)
    try:
        assert first.stdout.readline().strip() == "held", first.stderr.read()
        lock = lock_path(ck)
        lock.unlink()
        with writer_lock(ck, command="the second writer"):
            atomic_write_bytes(ck, b"second")
            out, err = first.communicate("go\n", timeout=60)
            assert out.startswith("refused"), (out, err)
            assert "\n" not in out.strip() and str(lock) in out, out
            assert lock.exists()  # the first writer removed only its own lock file
        assert ck.read_bytes() == b"second"
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_a_folder_moved_away_while_claimed_is_not_written_through_its_old_name(tmp_path: Path) -> None:
    """#30 item 2: `mv ds ds.old; mkdir ds` while an ingest holds ds: its next write under the name ds stops with
    one line (the new ds is not claimed), nothing is written into it."""
    out = tmp_path / "ds"
    with writer_lock(out, folder=True):
        out.rename(tmp_path / "ds.old")
        out.mkdir()
        with pytest.raises(OSError, match="moved away"):  # vidgan.files.ClaimLost
            atomic_write_bytes(out / "manifest.json", b"{}")
    assert list(out.iterdir()) == []


def test_where_a_folder_cannot_be_locked_a_removed_lock_file_stops_the_holder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """#30 item 2 where flock on a folder fails (NFS): the lock file alone claims the folder, so once it is removed
    the holder's next write stops with one line naming it instead of racing a second writer."""
    from vidgan import files

    monkeypatch.setattr(files, "_lock_folder", lambda *args: None)
    out = tmp_path / "ds"
    with writer_lock(out, folder=True) as lock:
        atomic_write_bytes(out / "manifest.json", b"1")
        lock.unlink()
        with pytest.raises(files.ClaimLost, match="removed or replaced") as caught:
            atomic_write_bytes(out / "manifest.json", b"2")
        assert str(lock) in str(caught.value) and "\n" not in str(caught.value)
    assert (out / "manifest.json").read_bytes() == b"1"


# ------------------------------------------------------------------------------------------ item 3: bad spool lines

BAD_LINES = [b"42", b"[1, 2]", b'"a string"', b"\xff\xfe not utf-8", b'{"op": "batch", "tags": {}}',
             b'{"seq": "7", "op": "batch"}', b"{not json"]


def _spool_with_bad_lines(folder: Path) -> spool.Spool:
    """A spool of 6 records with :data:`BAD_LINES` between its 3rd and 4th."""
    s = spool.Spool(folder)
    for i in range(1, 7):
        s.append("batch", metrics=[["fvd", 100.0 - i, 1000 + i, i]], tags={"n": str(i)})
    lines = s.path.read_bytes().splitlines(keepends=True)
    s.path.write_bytes(b"".join([*lines[:3], *(b + b"\n" for b in BAD_LINES), *lines[3:]]))
    return s


def test_bad_lines_in_a_spool_are_skipped_and_reported_never_the_records_after_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """#30 item 3: a line `42`, a non-object, invalid UTF-8, a record without `seq` in the middle of spool.jsonl:
    each is skipped with a warning naming the file and its line, and every record after it is kept."""
    path = _spool_with_bad_lines(tmp_path / "tracking").path
    with caplog.at_level(logging.WARNING, logger="tune_jobs.spool"):
        records = spool.read_records(path)
    assert [r["seq"] for r in records] == [1, 2, 3, 4, 5, 6]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == len(BAD_LINES), warned
    for line, message in zip(range(4, 4 + len(BAD_LINES)), warned, strict=True):
        assert str(path) in message and f"line {line} " in message, message


class _Client:
    """What :func:`tune_jobs.spool.reconcile` calls of an MlflowClient, keeping what it is sent."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.metrics: list[tuple[str, float, int]] = []
        self.status: str | None = None

    def get_run(self, run_id: str) -> Any:
        return SimpleNamespace(data=SimpleNamespace(tags=dict(self.tags), params={}))

    def get_metric_history(self, run_id: str, key: str) -> list:
        return [SimpleNamespace(step=s) for k, _, s in self.metrics if k == key]

    def log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        self.metrics += [(m.key, m.value, m.step) for m in metrics]
        self.tags.update({t.key: t.value for t in tags})

    def set_terminated(self, run_id: str, status: str) -> None:
        self.status = status


def test_a_finished_sweeps_resume_delivers_a_spool_with_bad_lines(tmp_path: Path) -> None:
    """#30 item 3: what `vidgan sweep --resume` does with each trial's checkpoint (tune_jobs.sweep.deliver_spools):
    a spool with bad lines in the middle is restored (Spool.restore) and reconciled with its run, every record
    delivered, none raised."""
    _spool_with_bad_lines(tmp_path / "checkpoint" / "tracking").append("status", status="FINISHED")
    restored = spool.Spool.restore(tmp_path / "checkpoint" / "tracking", tmp_path / "trial" / "tracking")
    assert restored.last_seq == 7
    client = _Client()
    assert spool.reconcile(client, "run", tmp_path / "checkpoint" / "tracking") == 7
    assert [step for _, _, step in client.metrics] == [1, 2, 3, 4, 5, 6] and client.status == "FINISHED"
    assert client.tags["n"] == "6" and client.tags[spool.TAG_DELIVERED].startswith("7:")


# ------------------------------------------------------------------------------------------ item 4: state.json


@pytest.mark.parametrize("text", [b'{"trial_id": "t1", "best": {"fvd": [9', b"42", b"\xff", b'{"best": 3}'],
                         ids=["torn", "number", "not-utf8", "best-not-object"])
def test_a_corrupt_state_file_is_ignored_with_a_warning_and_the_best_scores_rebuilt(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, text: bytes) -> None:
    """#30 item 4: a corrupt state.json (the JSONDecodeError naming no file on every resume): one warning naming it,
    and the state it held (the best scores so far) comes back from the spool's records."""
    s = spool.Spool(tmp_path / "tracking")
    s.append("batch", metrics=[["fvd", 90.0, 1, 2], ["best_fvd", 90.0, 1, 2], ["best_fvd_iteration", 2, 1, 2]])
    s.append("batch", metrics=[["fvd", 95.0, 1, 4], ["best_fvd", 90.0, 1, 4], ["best_fvd_iteration", 2, 1, 4]])
    (s.folder / spool.STATE_FILE).write_bytes(text)
    restored = spool.Spool.restore(s.folder, tmp_path / "restored")
    with caplog.at_level(logging.WARNING, logger="tune_jobs.spool"):
        state = restored.read_state()
        assert restored.read_state() == state
    assert state == {"best": {"fvd": [90.0, 2]}}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(restored.folder / spool.STATE_FILE) in warned[0], warned


def test_a_good_state_file_is_read_as_written(tmp_path: Path) -> None:
    s = spool.Spool(tmp_path / "tracking")
    state = {"trial_id": "t1", "best": {"fvd": [90.0, 2]}, "exploits": ["t2@4"]}
    s.write_state(state)
    assert s.read_state() == state


# ------------------------------------------------------------------------------------------ item 8: full disk

FULL_DISK = """
    import json, resource, signal, sys
    from tune_jobs.spool import Spool, read_records
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    s = Spool(sys.argv[1])
    s.append("batch", tags={"n": "1"})
    s.append("batch", tags={"n": "2"})
    image = s.folder / "sample.png"
    image.write_bytes(b"x" * 5000)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (s.path.stat().st_size + 40, hard))  # room for part of a line in any file
    try:  # what TrialLogger.report does at each evaluation: records, a sample file, the state
        s.append("batch", tags={"n": "3", "pad": "x" * 200})
        s.add_file(image, "big.png")
        s.write_state({"trial_id": "t1", "best": {"fvd": [90.0, 2]}, "pad": "x" * 500})
        print("appended", flush=True)
    except OSError as e:
        print("raised", e, flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # the disk has room again
    s.append("batch", tags={"n": "4"})
    print(json.dumps([r["tags"]["n"] for r in read_records(s.path)]), flush=True)
    print(json.dumps([r["tags"]["n"] for r in s.records]), flush=True)
    exported = s.export(sys.argv[2], 0)
    print(json.dumps(Spool(exported).read_state()), flush=True)
"""


def test_a_spool_append_on_a_full_disk_leaves_no_torn_line_and_does_not_fail_the_trial(tmp_path: Path) -> None:
    """#30 item 8: an append that fails half-way (a full disk): the trial goes on (no exception, one warning), the
    file is cut back to whole lines, and the record is written with the next append once there is room: no record
    after it is hidden."""
    child = _python(FULL_DISK, str(tmp_path / "tracking"), str(tmp_path / "checkpoint"))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    said, on_disk, in_memory, state = out.splitlines()
    assert said == "appended", (out, err)
    assert json.loads(on_disk) == ["1", "2", "3", "4"] and json.loads(in_memory) == ["1", "2", "3", "4"]
    assert json.loads(state)["best"] == {"fvd": [90.0, 2]}  # a checkpoint gets the state it could not write
    assert not (tmp_path / "tracking" / "files" / "big.png").exists()  # no half-copied file left
    assert "cannot write record 3" in err and str(tmp_path / "tracking" / spool.SPOOL_FILE) in err, err
    assert "Traceback" not in err, err


def test_an_append_after_a_torn_last_line_is_read_back(tmp_path: Path) -> None:
    """#30 item 8: a spool whose last line a crash tore (the write never finished): the next record goes on a line
    of its own, so it is read back, and the torn line is dropped."""
    s = spool.Spool(tmp_path / "tracking")
    s.append("batch", tags={"n": "1"})
    with open(s.path, "ab") as f:
        f.write(b'{"seq":2,"op":"batch","ta')
    again = spool.Spool(s.folder)
    assert again.last_seq == 1
    again.append("batch", tags={"n": "2"})
    assert [r["tags"]["n"] for r in spool.read_records(s.path)] == ["1", "2"]


# ------------------------------------------------------------------------------------------ item 12: permissions


def test_written_files_follow_the_umask_and_keep_the_mode_they_replace(tmp_path: Path) -> None:
    """#30 item 12: every file vidgan wrote was 0600 whatever the umask. A new file follows the umask (as `open`
    would make it); a replaced file keeps its permissions (a file made private stays private)."""
    old = os.umask(0o022)
    try:
        fresh = atomic_write_bytes(tmp_path / "fresh.json", b"{}")
        private = tmp_path / "private.pt"
        private.write_bytes(b"old")
        private.chmod(0o600)
        atomic_write_bytes(private, b"new")
        os.umask(0o007)
        grouped = atomic_write_bytes(tmp_path / "grouped.json", b"{}")
    finally:
        os.umask(old)
    assert fresh.stat().st_mode & 0o777 == 0o644
    assert private.stat().st_mode & 0o777 == 0o600 and private.read_bytes() == b"new"
    assert grouped.stat().st_mode & 0o777 == 0o660


def test_early_stopping_counts_no_failed_trial_as_saved() -> None:
    """#30 item 12: "early stopping saved 83%" counted a failed trial's missing iterations as saved; only trials that
    completed or that the scheduler stopped count."""
    from tune_jobs.report import TrialRow, iterations_saved

    def row(status: str, iterations: int) -> TrialRow:
        return TrialRow(trial_id=status, variant="gp", dataset="d", seed=0, status=status, iterations=iterations)

    assert iterations_saved([row("completed", 100), row("failed", 10), row("diverged", 0)], 100) == 0.0
    assert iterations_saved([row("completed", 100), row("stopped_by_asha", 25), row("failed", 5)], 100) == 0.375
    assert iterations_saved([row("failed", 5)], 100) == 0.0


# ------------------------------------------------------------------------------------------ item 12: vidgan train


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vidgan.ingest import ingest_sample

    root = tmp_path_factory.mktemp("probe-data") / "data"
    ingest_sample(root, frames=16, size=32, stride=8)
    return root


def _train(*argv: str | Path) -> subprocess.CompletedProcess:
    """``vidgan train ARGV`` in a process of its own, forked from a server with torch imported (:mod:`warm_cli`)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return warm_cli.run("tune_jobs.main", ["train", *argv, "--device", "cpu"], env=env, cwd=ROOT, timeout=300)


def _checkpoint(path: Path) -> Path:
    """A checkpoint at iteration 0 of a tiny model for :func:`data`'s clips."""
    from vidgan.config import ModelConfig, TrainConfig
    from vidgan.trainer import Trainer
    from vidgan.variants import get_variant

    Trainer(ModelConfig(frames=16, size=32, width=4), get_variant("gp"), TrainConfig(batch_size=2, n_critic=1),
            device="cpu").save(path)
    return path


def test_resume_through_a_symlinked_checkpoint_saves_to_its_target(data: Path, tmp_path: Path) -> None:
    """#30 item 12: `--resume` through a symbolic link replaced the link with a file and left its target behind; now
    the target is continued and the link stays."""
    from vidgan.trainer import read_checkpoint

    real = _checkpoint(tmp_path / "runs" / "real.pt")
    link = tmp_path / "link.pt"
    link.symlink_to(real)
    r = _train("--data", data, "--checkpoint", link, "--resume", "--iterations", "1")
    assert r.returncode == 0, r.stderr
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert read_checkpoint(real)["counters"]["iteration"] == 1
    assert not list(tmp_path.glob(".*vidgan-lock")) and not list(real.parent.glob(".*vidgan-lock"))


def test_resume_to_fewer_iterations_than_the_checkpoint_has_is_refused(data: Path, tmp_path: Path) -> None:
    """#30 item 12: `--resume --iterations` below the checkpoint's iteration exited 0 having done nothing; now one
    line says so (exit 2) and the checkpoint is as it was."""
    ck = _checkpoint(tmp_path / "ck.pt")
    assert _train("--data", data, "--checkpoint", ck, "--resume", "--iterations", "2").returncode == 0
    before = ck.read_bytes()
    r = _train("--data", data, "--checkpoint", ck, "--resume", "--iterations", "1")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    assert "iteration 2" in lines[0] and "--iterations 1" in lines[0] and str(ck) in lines[0], lines[0]
    assert ck.read_bytes() == before
