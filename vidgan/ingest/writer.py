"""Shard writing and the manifest, both atomic (write a temp file, fsync, rename).

A shard is only ever written whole and only with whole sources in it, and the manifest is rewritten
after every shard: an interrupted ingest leaves complete shards, a manifest that lists exactly the
sources they hold, and possibly its own temp files, which the next run removes. Running the same
command again therefore resumes: sources already listed are not decoded again.

Each shard is committed in two manifest writes: first its intent (``pending``: the shard's name, size,
sha256 and sources), then, once the shard is in place, the manifest listing it. A run killed between the
two leaves a shard that the next run can prove it wrote (name, size and sha256 as recorded), which it
then lists instead of decoding its sources again. Nothing else is ever removed: ``vidgan ingest`` deletes
only its own temporary files (:func:`clean_partial`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vidgan.files import atomic_write_bytes, is_own_temp
from vidgan.shards import CLIP_SCHEMA, MANIFEST_NAME, SCHEMA_VERSION, clips_to_table

from .config import IngestConfig
from .decode import Decoded

SHARD_NAME = "shard-{:05d}.parquet"
LEGACY_TMP_SUFFIX = ".tmp"  # temp files of vidgan 0.1 ingests (shard-00001.parquet.tmp)
_LEGACY_TMP = re.compile(r"(shard-\d{5}\.parquet|manifest\.json)" + re.escape(LEGACY_TMP_SUFFIX))


def new_manifest(cfg: IngestConfig, roots: list[str]) -> dict[str, Any]:
    """An empty manifest for an ingest with ``cfg``."""
    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "params": {**cfg.content_params(), "compression": cfg.compression,
                   "row_group_clips": cfg.row_group_clips, "shard_mb": cfg.shard_mb,
                   "max_pixels": cfg.max_pixels, "max_frames": cfg.max_frames},
        "clip_shape": [cfg.frames, cfg.size, cfg.size, 3],
        "roots": roots,
        "totals": {"clips": 0, "shards": 0, "bytes": 0, "sources_ok": 0, "sources_skipped": 0},
        "sources": {},
        "shards": [],
    }


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Recompute the totals and write ``manifest.json`` atomically."""
    srcs = manifest["sources"].values()
    manifest["totals"] = {
        "clips": sum(s["rows"] for s in manifest["shards"]),
        "shards": len(manifest["shards"]),
        "bytes": sum(s["bytes"] for s in manifest["shards"]),
        "sources_ok": sum(1 for s in srcs if s["status"] == "ok"),
        "sources_skipped": sum(1 for s in srcs if s["status"] == "skipped"),
    }
    data = json.dumps(manifest, indent=1, sort_keys=False).encode()
    atomic_write_bytes(out / MANIFEST_NAME, data)


def is_ingest_temp(name: str) -> bool:
    """Whether ``name`` is a temporary file of an ingest: :func:`vidgan.files.atomic_write`'s, or one of the
    exact names vidgan 0.1 used (``shard-00001.parquet.tmp``, ``manifest.json.tmp``); not any ``*.tmp``."""
    return is_own_temp(name) or _LEGACY_TMP.fullmatch(name) is not None


def clean_partial(out: Path) -> list[str]:
    """Delete the ingest's own temporary files left in ``out`` by an interrupted run; nothing else."""
    removed = []
    for p in out.iterdir():
        if is_ingest_temp(p.name) and p.is_file() and not p.is_symlink():
            p.unlink()
            removed.append(p.name)
    return removed


class ShardWriter:
    """Collects the clips of whole sources and writes a shard once about ``shard_mb`` MiB are pending."""

    def __init__(self, out: Path, cfg: IngestConfig, manifest: dict[str, Any]) -> None:
        self.out, self.cfg, self.manifest = out, cfg, manifest
        self.pending: list[Decoded] = []
        self.pending_bytes = 0
        self.pending_outcomes: dict[str, dict[str, Any]] = {}
        names = [s["file"] for s in manifest["shards"]]
        self.next_index = 1 + max((int(n[6:11]) for n in names), default=-1)

    def add(self, d: Decoded) -> None:
        """Queue one decoded source (its clips, or its skip reason); flush when the shard is full."""
        rec: dict[str, Any] = {"status": "ok" if d.n_clips else "skipped", "clips": d.n_clips}
        if d.source.label is not None:
            rec["label"] = d.source.label
        if d.n_clips:
            rec["fps"] = round(d.fps, 4)
            rec["frames_read"] = d.frames_read
            self.pending.append(d)
            self.pending_bytes += d.clips.nbytes
        else:
            rec["reason"] = d.error or "no clips"
        if d.warning:
            rec["warning"] = d.warning
        self.pending_outcomes[d.source.key] = rec
        if self.pending_bytes >= self.cfg.shard_mb * 2**20:
            self.flush()

    def skip(self, key: str, reason: str) -> None:
        """Record a source that was never decoded (found unusable during discovery)."""
        self.pending_outcomes[key] = {"status": "skipped", "clips": 0, "reason": reason}

    def flush(self) -> None:
        """Write pending clips as one shard (if any), then the manifest with their sources."""
        if self.pending:
            name = SHARD_NAME.format(self.next_index)
            self.next_index += 1
            rows, data = self._encode_shard()
            entry = {"file": name, "rows": rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for d in self.pending:
                self.pending_outcomes[d.source.key]["shard"] = name
            # intent first, so that a run killed before the manifest lists the shard leaves provably our file
            self.manifest["pending"] = {"shard": entry, "sources": self.pending_outcomes}
            write_manifest(self.out, self.manifest)
            atomic_write_bytes(self.out / name, data)
            del self.manifest["pending"]
            self.manifest["shards"].append(entry)
        if self.pending_outcomes or self.pending:
            self.manifest["sources"].update(self.pending_outcomes)
            write_manifest(self.out, self.manifest)
        self.pending, self.pending_bytes, self.pending_outcomes = [], 0, {}

    def _encode_shard(self) -> tuple[int, pa.Buffer]:
        """(rows, Parquet bytes) of the pending clips."""
        cfg = self.cfg
        table = pa.concat_tables(
            clips_to_table(list(d.clips), [d.source.key] * d.n_clips, d.starts, [d.fps] * d.n_clips,
                           [d.source.label] * d.n_clips)
            for d in self.pending
        )

        sink = pa.BufferOutputStream()
        with pq.ParquetWriter(
            sink,
            CLIP_SCHEMA,
            compression=cfg.compression,
            compression_level=cfg.compression_level,
            use_dictionary=["source", "label"],
            write_statistics=["frames", "height", "width", "start_frame", "fps"],
        ) as writer:
            writer.write_table(table, row_group_size=cfg.row_group_clips)
        return table.num_rows, sink.getvalue()

