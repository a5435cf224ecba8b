"""The ingest driver: discover sources, decode them (in-process or as Ray tasks), write shards, resume.

Decoding fans out as plain Ray tasks (one per source, at most two per cluster CPU in flight) when a
Ray cluster with more than one CPU is available: one already initialised in this process, one named
by ``RAY_ADDRESS``, or (``parallel="auto"`` with a large input on a multi-core machine) a local one
started for the ingest. Small inputs decode in-process, since starting Ray costs seconds.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from vidgan import storage
from vidgan.files import TMP_SUFFIX, cache_dir, resolve_fs, sha256_file, writer_lock
from vidgan.progress import progress
from vidgan.shards import MANIFEST_NAME, SCHEMA_VERSION, ShardError, check_shard_name, verify_file

from .config import IngestConfig
from .decode import Decoded, decode_source
from .sources import SourceFile, discover, synthetic_sources
from .writer import ShardWriter, clean_partial, new_manifest, write_manifest

log = logging.getLogger("vidgan.ingest")


class IngestError(RuntimeError):
    """The ingest cannot proceed or produced nothing usable; the message names the problem."""


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=TMP_SUFFIX, dir=out)  # never a user's name
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise IngestError(f"output directory {str(out)!r} is not writable: {e.strerror or e}") from e


def _shard_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("shard-*.parquet"))


def _check_manifest(manifest: Any) -> None:
    """ValueError naming what makes ``manifest`` unusable for resuming an ingest."""
    if not isinstance(manifest, dict):
        raise ValueError(f"a manifest is a JSON object, this is a {type(manifest).__name__}")
    kinds = {"params": dict, "roots": list, "sources": dict, "shards": list, "totals": dict}
    for key, kind in kinds.items():
        if not isinstance(manifest.get(key), kind):
            raise ValueError(f"{key!r} is missing or not a {kind.__name__}")
    for entry in manifest["shards"]:
        if not isinstance(entry, dict) or not {"file", "rows", "bytes", "sha256"} <= set(entry):
            raise ValueError(f"shard entry {str(entry)[:80]} lacks file, rows, bytes or sha256")
        check_shard_name(entry["file"])
        if not isinstance(entry["bytes"], int):
            raise ValueError(f"shard entry {entry['file']} has no byte count")


def _load_manifest(out: Path, cfg: IngestConfig, roots: list[str]) -> dict[str, Any]:
    path = out / MANIFEST_NAME
    if not path.exists():
        shards = _shard_files(out)
        if shards:
            listed = ", ".join(shards[:5]) + (f" and {len(shards) - 5} more" if len(shards) > 5 else "")
            raise IngestError(
                f"{out} holds {listed} but no {MANIFEST_NAME}, so it cannot be resumed; nothing was deleted. "
                f"Restore its {MANIFEST_NAME}, or pass an empty or new --out"
            )
        return new_manifest(cfg, roots)
    try:
        manifest = json.loads(path.read_text())
        _check_manifest(manifest)
    except (OSError, ValueError) as e:
        detail = " ".join(str(e).split())[:200]
        raise IngestError(
            f"{path} is not a valid shard manifest ({detail}); nothing was changed. Restore it from a copy, "
            "or ingest into another --out"
        ) from None
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise IngestError(
            f"{path} has schema version {manifest.get('schema_version')}, this vidgan writes {SCHEMA_VERSION}"
        )
    old = {k: manifest.get("params", {}).get(k) for k in cfg.content_params()}
    if old != cfg.content_params():
        raise IngestError(
            f"{out} already holds clips made with {old}; this ingest asks for {cfg.content_params()}. "
            "Use another --out (one shard directory holds one clip shape)."
        )
    for r in roots:
        if r not in manifest["roots"]:
            manifest["roots"].append(r)
    return manifest


def _settle(out: Path, manifest: dict[str, Any]) -> str | None:
    """Check ``out`` against its manifest before resuming; return the name of a shard adopted from an
    interrupted commit (see :mod:`.writer`), if any.

    Refuses (IngestError, nothing changed) when a listed shard is missing, of another size or of another sha256
    (:func:`vidgan.shards.verify_file`: hashed once per version of the file), or when a
    ``shard-*.parquet`` file is not listed and is not provably the pending shard of an interrupted run.
    """
    damaged = []
    fs = pafs.LocalFileSystem()
    for entry in manifest["shards"]:
        p = out / entry["file"]
        if not p.is_file():
            damaged.append(f"{entry['file']} is missing")
        elif p.stat().st_size != entry["bytes"]:
            damaged.append(f"{entry['file']} has {p.stat().st_size} bytes, the manifest says {entry['bytes']}")
        else:  # same size: its sha256 (hashed once per version of the file, as readers do)
            try:
                verify_file(fs, os.path.abspath(p), entry["bytes"], str(entry["sha256"]), entry["file"])  # as readers
            except ShardError:
                damaged.append(f"{entry['file']}: sha256 differs from the manifest (altered or corrupt)")
    if damaged:
        raise IngestError(
            f"{out}: {'; '.join(damaged[:5])}{' ...' if len(damaged) > 5 else ''}. The dataset is damaged; nothing "
            "was changed. Restore the shards from a copy, or ingest into a new --out"
        )
    pending = manifest.get("pending")
    listed = {entry["file"] for entry in manifest["shards"]}
    unlisted = [n for n in _shard_files(out) if n not in listed]
    adopt = None
    if isinstance(pending, dict) and all(isinstance(pending.get(k), dict) for k in ("shard", "sources")):
        entry = pending["shard"]
        name = entry.get("file")
        if name in unlisted and (out / name).stat().st_size == entry.get("bytes") and (
            sha256_file(out / name) == entry.get("sha256")
        ):
            unlisted.remove(name)
            adopt = name
    if unlisted:
        names = ", ".join(unlisted[:5]) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
        raise IngestError(
            f"{out} holds {names}, which its {MANIFEST_NAME} does not list (vidgan did not write them into this "
            f"dataset); nothing was deleted. Move them out of {out}, then run again"
        )
    if "pending" in manifest:
        del manifest["pending"]
        if adopt:
            manifest["shards"].append(pending["shard"])
            manifest["sources"].update(pending["sources"])
        write_manifest(out, manifest)
    return adopt


def _use_ray(cfg: IngestConfig, n: int) -> tuple[bool, bool]:
    """(use Ray tasks, this call started Ray)."""
    if cfg.parallel == "local" or n == 0:
        return False, False
    ray_up = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    address = os.environ.get("RAY_ADDRESS")
    big_local = n >= 4 * cfg.ray_min_sources and (os.cpu_count() or 1) > 1
    if cfg.parallel == "auto" and not (n >= cfg.ray_min_sources and (ray_up or address or big_local)):
        return False, False
    try:
        import ray
    except ImportError:  # a core install (no vidgan[sweep] extra): decode in this process
        if cfg.parallel == "ray":
            raise IngestError("--parallel ray needs Ray: pip install 'vidgan[sweep]'") from None
        return False, False

    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    cpus = ray.cluster_resources().get("CPU", 0)
    nodes = len([nd for nd in ray.nodes() if nd.get("Alive")])
    if cfg.parallel == "ray" or cpus > 1 or nodes > 1:
        return True, started
    if started:
        ray.shutdown()
    return False, False


def _decode_local(todo: list[SourceFile], cfg: IngestConfig) -> Iterator[Decoded]:
    for src in todo:
        yield decode_source(src, cfg)


def _decode_ray(todo: list[SourceFile], cfg: IngestConfig) -> Iterator[Decoded]:
    """Decode as Ray tasks, yielding results as they finish; a failed task becomes a skip."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=1)(decode_source)
    window = max(2, int(2 * ray.cluster_resources().get("CPU", 1)))
    pending: dict[Any, SourceFile] = {}
    queue = list(reversed(todo))
    while queue or pending:
        while queue and len(pending) < window:
            src = queue.pop()
            pending[task.remote(src, cfg)] = src
        done, _ = ray.wait(list(pending), num_returns=1)
        src = pending.pop(done[0])
        try:
            yield ray.get(done[0])
        except Exception as e:  # a crashed worker (e.g. killed for memory) must not end the ingest
            yield Decoded(src, error=f"decode task failed: {type(e).__name__}: {str(e).splitlines()[0]}")


def ingest(sources: list[str], out: str | os.PathLike, config: IngestConfig | None = None) -> dict[str, Any]:
    """Ingest ``sources`` (and the config's ``synthetic`` dataset, if any) into the shard directory ``out`` and
    return the manifest.

    Resumes: sources the manifest already lists are not decoded again. Raises :class:`IngestError`
    when ``out`` is not writable, holds clips of another shape, or no clip exists after the run, and
    :class:`vidgan.files.WriterBusy` naming the other process when another ingest is writing ``out`` (one
    writer per folder: :func:`vidgan.files.writer_lock`).
    """
    cfg = config or IngestConfig()
    made = synthetic_sources(cfg.synthetic) if cfg.synthetic else []
    if not sources and not made:
        raise IngestError("no sources given")
    if storage.is_remote(out):
        return _ingest_remote(sources, made, str(out), cfg)
    out = Path(storage.local_path(out))
    _prepare_out(out)
    advice = "wait for it to finish, then run this command again: it adds its sources to the same dataset"
    with writer_lock(out, folder=True, command="vidgan ingest", advice=advice):
        return _ingest(sources, made, out, cfg)


def _ingest(sources: list[str], made: list[SourceFile], out: Path, cfg: IngestConfig) -> dict[str, Any]:
    roots = [os.path.abspath(s) for s in sources] + sorted({s.path.split("/chunk=")[0] for s in made})
    manifest = _load_manifest(out, cfg, roots)
    adopted = _settle(out, manifest)
    if adopted:
        log.info("kept %s, written by an interrupted ingest (its size and sha256 match the record)", adopted)
    removed = clean_partial(out)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted ingest: %s", len(removed), ", ".join(removed))
    writer = ShardWriter(out, cfg, manifest)
    done = set(manifest["sources"])
    todo: list[SourceFile] = []
    for x in [*made, *discover(sources)]:
        if x.key in done:
            continue
        if isinstance(x, SourceFile):
            todo.append(x)
        else:
            writer.skip(x.key, x.reason)
    log.info("%d source(s) to decode, %d already in the manifest", len(todo), len(done))
    use_ray, started = _use_ray(cfg, len(todo))
    try:
        results = _decode_ray(todo, cfg) if use_ray else _decode_local(todo, cfg)
        bar = progress(results, total=len(todo), desc="ingest", unit="video")
        clips = 0
        for i, d in enumerate(bar, 1):
            writer.add(d)
            clips += 0 if d.error else d.n_clips
            bar.set_postfix(clips=clips, refresh=False)
            if d.error:
                log.info("[%d/%d] skipped %s: %s", i, len(todo), d.source.key, d.error)
            else:
                log.debug("[%d/%d] %s: %d clips", i, len(todo), d.source.key, d.n_clips)
        writer.flush()
    finally:
        if started:
            import ray

            ray.shutdown()
    if manifest["totals"]["clips"] == 0 and not manifest["shards"]:
        reasons = sorted({s.get("reason", "?") for s in manifest["sources"].values()})
        detail = "; ".join(reasons[:5]) if reasons else "no sources found"
        raise IngestError(f"no usable clips in {', '.join(roots)}: {detail}")
    return manifest


# ------------------------------------------------------------------------------ object stores


def staging_dir(out: str) -> Path:
    """The local folder where an ingest into the object-store URI ``out`` builds its dataset before publishing it
    (in the cache: removed once published; an interrupted ingest resumes from it)."""
    import hashlib

    key = hashlib.sha256(storage.split_query(storage.redact_uri(out))[0].encode()).hexdigest()[:20]
    return cache_dir() / "staging" / key


def _ingest_remote(sources: list[str], made: list[SourceFile], out: str, cfg: IngestConfig) -> dict[str, Any]:
    """Ingest into an object store (``s3://``): decode and write shards into a local staging folder with every
    local guarantee (resume, verification, one writer), then publish: each shard as a whole object, the manifest
    last, so that readers, who start from the manifest, see the whole dataset or none of it.

    Refused in one line before anything is written: a scheme vidgan does not write, a missing bucket, a denied
    write, and a target that already holds a dataset (a published dataset is not appended to: ingest into a new
    prefix). One writer at a time: an S3 lease object (:func:`vidgan.storage.claim`)."""
    shown = storage.redact_uri(out)
    try:
        storage.probe_writable(out, "--out")  # its scheme, the bucket, the right to write
    except storage.StorageError as e:
        raise IngestError(str(e)) from None
    advice = "wait for it to finish, then run this command again"
    with storage.claim(out, folder=True, command="vidgan ingest", advice=advice):
        manifest_uri = storage.child(out, MANIFEST_NAME)
        if storage.exists(manifest_uri):
            raise IngestError(
                f"{shown} already holds a dataset ({MANIFEST_NAME}); a published dataset is not appended to, so "
                "nothing was changed: ingest into a new prefix (or locally, then copy)"
            )
        stage = staging_dir(out)
        log.info("building the dataset in %s, then publishing it to %s", stage, shown)
        stage.mkdir(parents=True, exist_ok=True)
        with writer_lock(stage, folder=True, command="vidgan ingest", advice=advice):
            manifest = _ingest(sources, made, stage, cfg)
        _publish(stage, out, manifest)
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
    return manifest


def _publish(stage: Path, out: str, manifest: dict[str, Any]) -> None:
    """Upload the staged shards that ``out`` lacks (same name and size), then the manifest, last."""
    import pyarrow.fs as pafs

    fs, root = resolve_fs(out)
    have = {i.base_name: i.size for i in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
            if i.type == pafs.FileType.File}
    entries = manifest["shards"]
    for entry in progress(entries, total=len(entries), desc="publish", unit="shard"):
        if have.get(entry["file"]) == entry["bytes"]:
            continue  # published by an interrupted run: readers check its sha256 against the manifest
        storage.upload_file(stage / entry["file"], storage.child(out, entry["file"]))
    storage.upload_file(stage / MANIFEST_NAME, storage.child(out, MANIFEST_NAME))
