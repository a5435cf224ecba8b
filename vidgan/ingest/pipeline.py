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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vidgan.progress import progress
from vidgan.shards import MANIFEST_NAME, SCHEMA_VERSION

from .config import IngestConfig
from .decode import Decoded, decode_source
from .sources import SourceFile, discover
from .writer import ShardWriter, clean_partial, new_manifest

log = logging.getLogger("vidgan.ingest")


class IngestError(RuntimeError):
    """The ingest cannot proceed or produced nothing usable; the message names the problem."""


def _prepare_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise IngestError(f"output directory {str(out)!r} is not writable: {e.strerror or e}") from e


def _load_manifest(out: Path, cfg: IngestConfig, roots: list[str]) -> dict[str, Any]:
    path = out / MANIFEST_NAME
    if not path.exists():
        return new_manifest(cfg, roots)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise IngestError(f"cannot read existing {path}: {e}; remove it or use another --out") from e
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


def _use_ray(cfg: IngestConfig, n: int) -> tuple[bool, bool]:
    """(use Ray tasks, this call started Ray)."""
    if cfg.parallel == "local" or n == 0:
        return False, False
    ray_up = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    address = os.environ.get("RAY_ADDRESS")
    big_local = n >= 4 * cfg.ray_min_sources and (os.cpu_count() or 1) > 1
    if cfg.parallel == "auto" and not (n >= cfg.ray_min_sources and (ray_up or address or big_local)):
        return False, False
    import ray

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
    """Ingest ``sources`` into the shard directory ``out`` and return the manifest.

    Resumes: sources the manifest already lists are not decoded again. Raises :class:`IngestError`
    when ``out`` is not writable, holds clips of another shape, or no clip exists after the run.
    """
    cfg = config or IngestConfig()
    out = Path(out)
    if not sources:
        raise IngestError("no sources given")
    _prepare_out(out)
    roots = [os.path.abspath(s) for s in sources]
    manifest = _load_manifest(out, cfg, roots)
    removed = clean_partial(out, manifest)
    if removed:
        log.info("removed %d partial file(s) of an interrupted ingest: %s", len(removed), ", ".join(removed))
    writer = ShardWriter(out, cfg, manifest)
    done = set(manifest["sources"])
    todo: list[SourceFile] = []
    for x in discover(sources):
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
        raise IngestError(f"no usable clips in {', '.join(sources)}: {detail}")
    return manifest
