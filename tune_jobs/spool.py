"""A trial's durable tracking spool and the thread that delivers it to MLflow.

A trial never calls MLflow itself. What it would log is appended, in order, to an append-only JSONL file
(``spool.jsonl``, each line fsync'd, numbered 1, 2, ...) with the files it refers to beside it, and a
background thread delivers the records to the trial's MLflow run. Training never waits for MLflow: while the
server is unreachable the records pile up on disk and go out, in order, when it answers again.

**Committed records.** A record becomes deliverable only once it is *committed*: the records of an evaluation
are committed after the Tune checkpoint that holds them (the checkpoint carries a copy of the spool) has been
reported, so an evaluation that is lost with its node and recomputed after a restore never reaches MLflow
twice. Records whose content does not depend on training (parameters, tags of a restart) are also sent at
once, outside the order (they are idempotent).

**Exactly once.** Every record is idempotent in MLflow (metrics carry their own timestamp, and MLflow keeps one
row per (key, step, timestamp, value); tags and parameters are set to the same value; artifacts overwrite
their own path; a sample image is skipped when its (key, step) is there), and the run's tag
:data:`TAG_DELIVERED` holds ``<seq>:<hash>`` of the last delivered record, set in the same ``log_batch`` as
its metrics; each record's hash chains all records before it. A spool restored from a checkpoint (on another
node, or by ``vidgan sweep --resume``) whose record at that sequence number has that hash is delivered from
there on; a run that went back (restored from an older MLflow backup) gets the records after its tag. When the
run's last record is not in the spool (another lineage: a trial restored from an older checkpoint than the one
whose records reached MLflow, or a PBT exploit), every record is delivered in *repair* mode: a metric whose
(key, step) the run had before is left out, so no step appears twice.

The checkpoint's spool is the source of truth: :func:`reconcile` delivers one to its run, synchronously, for
the driver (the end of a sweep, and trials whose last records were not delivered before they stopped).

**Damage.** A line that is not a record is skipped with a warning naming the file and the line, never the records
after it (:func:`read_records`); a torn last line is dropped, and the next record starts a line of its own. An
append that fails (a full disk) leaves whole lines only and keeps the record in memory, written with the next
append; checkpoints get the records and the state from memory. A ``state.json`` that cannot be read costs a
warning: the best scores are rebuilt from the records (:meth:`Spool.read_state`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.jsonl"
FILES_DIR = "files"
STATE_FILE = "state.json"  # small state a restored trial resumes (e.g. the best scores so far)
#: the run tag holding the last delivered sequence number
TAG_DELIVERED = "vidgan.tracking.delivered_seq"
#: per-request limits of MLflow's HTTP client in trial processes: the delivery thread retries on its own, for
#: as long as an outage lasts, so a request must fail fast instead of blocking in MLflow's backoff (7 retries:
#: ~4 minutes)
FAST_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def fast_http() -> None:
    """Make this process's MLflow requests fail fast (:data:`FAST_HTTP_ENV`); settings already lower stay."""
    for key, value in FAST_HTTP_ENV.items():
        current = os.environ.get(key)
        if current is None or not current.isdigit() or int(current) > int(value):
            os.environ[key] = value


class Spool:
    """The append-only record file of one trial, in ``folder``."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / FILES_DIR).mkdir(exist_ok=True)
        self.path = self.folder / SPOOL_FILE
        self._lock = threading.Lock()
        self.records: list[dict[str, Any]] = read_records(self.path)
        self.committed = self.last_seq
        self.unwritten = 0  # records kept in memory only: the last appends failed (a full disk)
        self._state_warned = False
        self._state: dict[str, Any] | None = None  # what write_state was given last

    @property
    def last_seq(self) -> int:
        return self.records[-1]["seq"] if self.records else 0

    def append(self, op: str, **fields: Any) -> dict[str, Any]:
        """Write one record (fsync'd) and return it; not deliverable before :meth:`commit`.

        A write that fails (a full disk) leaves the file as it was, never a torn line, and costs one warning
        naming the file: the record is kept in memory (delivered, and exported into checkpoints, all the same)
        and written with the next append that succeeds."""
        with self._lock:
            record = {"seq": self.last_seq + 1, "op": op, **fields}
            previous = self.records[-1]["h"] if self.records else ""
            body = json.dumps(record, sort_keys=True, separators=(",", ":"))
            record["h"] = hashlib.sha256((previous + body).encode()).hexdigest()[:16]
            self.records.append(record)
            self.unwritten += 1
            lines = [_line(r) for r in self.records[len(self.records) - self.unwritten :]]
            try:
                _append_lines(self.path, "".join(lines).encode())
            except OSError as exc:
                if self.unwritten == 1:
                    log.warning("tracking spool %s: cannot write record %d (%s): kept in memory and written with "
                                "the next record; MLflow and checkpoints still get it", self.path, record["seq"],
                                exc.strerror or exc)
                return record
            if self.unwritten > 1:
                log.warning("tracking spool %s: written again (%d records kept in memory are on disk now)",
                            self.path, self.unwritten)
            self.unwritten = 0
            return record

    def add_file(self, source: str | os.PathLike, name: str | None = None) -> str:
        """Copy a file into the spool (fsync'd); returns its name relative to the spool folder. A copy that fails
        (a full disk) is removed with one warning naming it: its record is delivered without that file."""
        rel = f"{FILES_DIR}/{name or Path(source).name}"
        target = self.folder / rel
        try:
            shutil.copyfile(source, target)
            with open(target, "rb") as f:
                os.fsync(f.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                target.unlink()
            log.warning("tracking spool %s: cannot keep %s (%s): it will not reach MLflow", self.folder, rel,
                        exc.strerror or exc)
        return rel

    def commit(self, seq: int | None = None) -> None:
        """Make the records up to ``seq`` (default: all) deliverable."""
        with self._lock:
            self.committed = max(self.committed, self.last_seq if seq is None else seq)

    def pending(self, after: int) -> list[dict[str, Any]]:
        """Committed records after sequence number ``after``."""
        with self._lock:
            return [r for r in self.records if after < r["seq"] <= self.committed]

    def read_state(self) -> dict[str, Any]:
        """The trial's small state (``trial_id``, ``best``: {key: [value, iteration]}, ``exploits``), or {}.

        It holds nothing the records do not: a ``state.json`` that cannot be read or is not such an object costs
        one warning naming it, and the best scores are rebuilt from the spool's records (the ``best_<key>``
        metrics it logged); ``trial_id`` and ``exploits`` are then unknown."""
        path = self.folder / STATE_FILE
        if self._state is not None:
            return json.loads(json.dumps(self._state))
        if not path.is_file():
            return {}
        try:
            state = json.loads(path.read_bytes().decode("utf-8"))
            why = _state_problem(state)
        except (OSError, ValueError) as exc:
            why = f"unreadable ({' '.join(str(exc).split())[:200]})"
        if why is None:
            return state
        if not self._state_warned:
            self._state_warned = True
            log.warning("tracking state %s is %s: ignored; the best scores so far are rebuilt from the spool's "
                        "records", path, why)
        best = best_from_records(self.records)
        return {"best": best} if best else {}

    def write_state(self, state: dict[str, Any]) -> None:
        """Keep ``state`` (:meth:`read_state`) and write it to ``state.json``. A write that fails (a full disk)
        costs one warning: the state is kept in memory, and :meth:`export` puts it into checkpoints all the same."""
        self._state = json.loads(json.dumps(state))
        tmp = self.folder / (STATE_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.folder / STATE_FILE)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.warning("tracking state %s: cannot write it (%s): kept in memory", self.folder / STATE_FILE,
                        exc.strerror or exc)

    def export(self, target: str | os.PathLike, delivered: int) -> Path:
        """Copy the spool into ``target`` (a checkpoint folder): every record (metrics and tags are small, and a
        run restored from an older MLflow backup needs them), and the files of the records not yet delivered."""
        target = Path(target)
        (target / FILES_DIR).mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self.records:  # from memory: the records a failed append kept there too, no line that is not one
                with open(target / SPOOL_FILE, "wb") as f:
                    f.write("".join(_line(r) for r in self.records).encode())
            for record in self.records:
                if record["seq"] > delivered and "file" in record and (self.folder / record["file"]).exists():
                    shutil.copyfile(self.folder / record["file"], target / record["file"])
        if self._state is not None:
            (target / STATE_FILE).write_text(json.dumps(self._state))
        elif (self.folder / STATE_FILE).exists():
            shutil.copyfile(self.folder / STATE_FILE, target / STATE_FILE)
        return target

    @classmethod
    def restore(cls, source: str | os.PathLike | None, folder: str | os.PathLike) -> Spool:
        """A spool in ``folder``: a copy of ``source`` (a spool :meth:`export` ed into a checkpoint) with all of its
        records committed, or an empty one (``source`` None or missing). What ``folder`` held is dropped."""
        folder = Path(folder)
        if folder.exists():
            shutil.rmtree(folder)
        if source is not None and (Path(source) / SPOOL_FILE).exists():
            shutil.copytree(source, folder)
        return cls(folder)


def _line(record: dict[str, Any]) -> str:
    """A record as its line in the spool file."""
    return json.dumps(record, separators=(",", ":")) + "\n"


def _append_lines(path: Path, data: bytes) -> None:
    """Append whole lines to ``path`` (fsync'd). A file that does not end a line (a torn write of a crash) gets a
    newline first, so the torn line stays alone; a write that fails is cut off again: the file is as before."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):  # else what stays is a torn line alone, which readers skip
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


_OPS = ("batch", "status", "artifact", "image")


def _problem(record: Any, last_seq: int) -> str | None:
    """Why a parsed line is not a record that can follow sequence number ``last_seq``, or None when it is."""
    if not isinstance(record, dict):
        return f"a JSON {type(record).__name__}, not an object"
    seq = record.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return "no sequence number (seq)"
    if seq <= last_seq:
        return f"seq {seq} does not follow {last_seq}"
    if record.get("op") not in _OPS:
        return f"unknown op {record.get('op')!r}"
    if record["op"] == "batch":
        metrics, params, tags = record.get("metrics", []), record.get("params", {}), record.get("tags", {})
        if not (isinstance(metrics, list) and all(_is_metric(m) for m in metrics)):
            return "metrics that are not [key, value, timestamp, step] lists"
        if not (isinstance(params, dict) and isinstance(tags, dict)):
            return "params or tags that are not objects"
    elif record["op"] == "status" and not isinstance(record.get("status"), str):
        return "no status"
    elif record["op"] in ("artifact", "image") and not isinstance(record.get("file"), str):
        return "no file"
    elif record["op"] == "image" and not (isinstance(record.get("key"), str) and _is_int(record.get("step"))):
        return "no key or step"
    return None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_metric(m: Any) -> bool:
    return (isinstance(m, list) and len(m) == 4 and isinstance(m[0], str)
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in m[1:])
            and all(_is_int(x) or (isinstance(x, float) and x.is_integer()) for x in m[2:]))


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a spool file, in order. A line that is not a record (not JSON, not UTF-8, not an object,
    no or an out-of-order sequence number, an unknown op) is skipped with a warning naming the file and the line,
    and the records after it are kept; a torn last line (a crash mid-write) is dropped quietly."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        last = number == len(lines)  # no newline after it: the write of this line never finished
        try:
            record = json.loads(raw.decode("utf-8"))
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
            why = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "not JSON"
            record = None
        else:
            why = _problem(record, records[-1]["seq"] if records else 0)
        if why is None:
            records.append(record)
        elif last:
            log.info("tracking spool %s: line %d is torn (a write that never finished): dropped", path, number)
        else:
            log.warning("tracking spool %s: line %d is not a tracking record (%s): skipped, the records after it "
                        "are kept", path, number, why)
    return records


def _state_problem(state: Any) -> str | None:
    """Why a parsed ``state.json`` is not a spool state, or None when it is."""
    if not isinstance(state, dict):
        return f"a JSON {type(state).__name__}, not an object"
    best = state.get("best", {})
    if not (isinstance(best, dict) and all(
            isinstance(v, list) and len(v) == 2 and isinstance(v[0], int | float) and _is_int(v[1])
            for v in best.values())):
        return "not a state: its best scores are not {key: [value, iteration]}"
    if not isinstance(state.get("trial_id", ""), str):
        return "not a state: its trial_id is not a string"
    exploits = state.get("exploits", [])
    if not (isinstance(exploits, list) and all(isinstance(e, str) for e in exploits)):
        return "not a state: its exploits are not a list of strings"
    return None


def best_from_records(records: list[dict[str, Any]]) -> dict[str, list[float | int]]:
    """The best score so far of each ranked key, ``{key: [value, iteration]}``, from the last ``best_<key>`` and
    ``best_<key>_iteration`` metrics the records hold (what :class:`~tune_jobs.tracking.TrialLogger` logs)."""
    best: dict[str, list[float | int]] = {}
    for record in records:
        if record.get("op") != "batch":
            continue
        metrics = {m[0]: m[1] for m in record.get("metrics", [])}
        for name, iteration in metrics.items():
            key = name[len("best_") : -len("_iteration")]
            if name.startswith("best_") and name.endswith("_iteration") and f"best_{key}" in metrics:
                best[key] = [float(metrics[f"best_{key}"]), int(iteration)]
    return best


# ------------------------------------------------------------------------------------------ delivery
class Cursor:
    """Where a run's delivery stands: the last delivered record, and in repair mode the steps of each metric the
    run held before (loaded once per key), which are not sent again."""

    def __init__(self, client: Any, run_id: str, records: list[dict[str, Any]]) -> None:
        self.client, self.run_id = client, run_id
        value = client.get_run(run_id).data.tags.get(TAG_DELIVERED, "")
        seq_text, _, digest = value.partition(":")
        seq = int(seq_text) if seq_text.isdigit() else 0
        mine = next((r for r in records if r["seq"] == seq), None)
        self.repair = seq > 0 and (mine is None or mine.get("h") != digest)
        self.seq = 0 if self.repair else seq
        self._steps: dict[str, set[int]] = {}

    def known_steps(self, key: str) -> set[int]:
        if key not in self._steps:
            self._steps[key] = {m.step for m in self.client.get_metric_history(self.run_id, key)}
        return self._steps[key]


def deliver(cursor: Cursor, record: dict[str, Any], folder: Path) -> None:
    """Send one record to the cursor's run (idempotent) and move the run's delivered tag to it."""
    from mlflow.entities import Metric, Param, RunTag

    client, run_id = cursor.client, cursor.run_id
    seq_tag = RunTag(TAG_DELIVERED, f"{record['seq']}:{record.get('h', '')}")
    op = record["op"]
    if op == "batch":
        metrics = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in record.get("metrics", [])]
        if cursor.repair:
            metrics = [m for m in metrics if m.step not in cursor.known_steps(m.key)]
        params = record.get("params", {})
        if params:  # a parameter already set (an earlier delivery) must not be sent again with another text
            existing = client.get_run(run_id).data.params
            params = {k: v for k, v in params.items() if k not in existing}
        items = [Param(k, str(v)) for k, v in params.items()]
        tags = [RunTag(k, str(v)) for k, v in record.get("tags", {}).items()]
        chunks = [items[i : i + 100] for i in range(0, len(items), 100)] or [[]]  # MLflow: 100 params per batch
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            client.log_batch(run_id, metrics=metrics if last else [], params=chunk,
                             tags=[*tags, seq_tag] if last else [])
        cursor.seq = record["seq"]
        return
    path = folder / record.get("file", "")
    if op == "status":
        client.set_terminated(run_id, record["status"])
    elif not path.is_file():  # delivered before this spool was exported (its file was left behind then)
        log.debug("spool record %s: %s is gone, skipped", record["seq"], path)
    elif op == "artifact" and record.get("name"):  # uploaded under another name than the spool's file
        import tempfile

        with tempfile.TemporaryDirectory(prefix="vidgan-spool-") as tmp:
            named = Path(tmp) / record["name"]
            shutil.copyfile(path, named)
            client.log_artifact(run_id, str(named), record.get("artifact_path"))
    elif op == "artifact":
        client.log_artifact(run_id, str(path), record.get("artifact_path"))
    elif op == "image":
        key, step = record["key"], int(record["step"])
        prefix = f"images/{key}+step+{step}+"
        if not any(a.path.startswith(prefix) for a in client.list_artifacts(run_id, "images")):
            import numpy as np
            from PIL import Image

            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            client.log_image(run_id, pixels, key=key, step=step, timestamp=record.get("timestamp"))
    else:
        raise ValueError(f"unknown spool record {op!r}")
    client.log_batch(run_id, tags=[seq_tag])
    cursor.seq = record["seq"]


@dataclass
class Outage:
    """Says once that MLflow went away and once that it is back."""

    what: str
    down_since: float | None = None
    report: Callable[[str], None] = log.warning

    def failed(self, exc: BaseException) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            detail = " ".join(str(exc).split())[:200]
            self.report(f"MLflow is unreachable ({detail}): {self.what} goes on and keeps what it logs until "
                        "MLflow answers again")

    def ok(self) -> None:
        if self.down_since is not None:
            self.report(f"MLflow is back after {time.monotonic() - self.down_since:.0f} s: delivering what "
                        f"{self.what} kept")
            self.down_since = None


class Delivery(threading.Thread):
    """Delivers a :class:`Spool` to an MLflow run in the background, for as long as it takes.

    ``open_run`` returns the run id (finding or creating the run; called again until it succeeds). ``urgent``
    callables ``fn(client, run_id)`` (idempotent, e.g. dataset inputs) run once each, as soon as MLflow answers.
    """

    def __init__(self, spool: Spool, client: Any, open_run: Callable[[], str], what: str,
                 backoff_s: tuple[float, float] = (1.0, 10.0)) -> None:
        super().__init__(name="vidgan-spool-delivery", daemon=True)
        self.spool, self.client, self.open_run = spool, client, open_run
        self.run_id: str | None = None
        self.cursor: Cursor | None = None
        self.outage = Outage(what)
        self.backoff_s = backoff_s
        self._urgent: list[Callable[[Any, str], None]] = []
        self._wake = threading.Condition()
        self._stop_event = threading.Event()
        self.run_ready = threading.Event()

    @property
    def delivered(self) -> int:
        return self.cursor.seq if self.cursor is not None else 0

    def urgent(self, fn: Callable[[Any, str], None]) -> None:
        with self._wake:
            self._urgent.append(fn)
            self._wake.notify()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify()

    def stop(self) -> None:
        self._stop_event.set()
        self.wake()

    def backlog(self) -> int:
        """Committed records not yet delivered."""
        return len(self.spool.pending(self.delivered))

    def idle(self) -> bool:
        return self.run_ready.is_set() and not self._urgent and not self.backlog()

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every committed record to be delivered; True when it was."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.idle():
            self.wake()
            time.sleep(0.05)
        return self.idle()

    def _step(self) -> None:
        """One pass: open the run, urgent work, committed records."""
        if self.cursor is None:
            run_id = self.run_id or self.open_run()
            self.run_id = run_id
            self.cursor = Cursor(self.client, run_id, self.spool.records)
            self.run_ready.set()
        while self._urgent:
            self._urgent[0](self.client, self.cursor.run_id)
            self._urgent.pop(0)
        for record in self.spool.pending(self.cursor.seq):
            deliver(self.cursor, record, self.spool.folder)

    def run(self) -> None:
        delay = self.backoff_s[0]
        while not self._stop_event.is_set():
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - any failure: MLflow is away; try again later
                self.outage.failed(exc)
                self._stop_event.wait(delay)
                delay = min(delay * 2, self.backoff_s[1])
                continue
            self.outage.ok()
            delay = self.backoff_s[0]
            with self._wake:
                if not self._urgent and not self.spool.pending(self.delivered) and not self._stop_event.is_set():
                    self._wake.wait(timeout=5.0)


def reconcile(client: Any, run_id: str, folder: str | os.PathLike) -> int:
    """Deliver the spool of a checkpoint (``folder``) to ``run_id`` from the run's delivered tag on; returns how
    many records were sent. Raises what MLflow raises (the caller retries)."""
    folder = Path(folder)
    records = read_records(folder / SPOOL_FILE)
    cursor = Cursor(client, run_id, records)
    todo = [r for r in records if r["seq"] > cursor.seq]
    for record in todo:
        deliver(cursor, record, folder)
    return len(todo)
