"""Source kinds of ``vidgan ingest``: one module per kind of file, found by a registry.

A kind module (a file in this folder, or a module named by an entry point of the group ``vidgan.ingest_sources``
whose name is the kind's) holds:

- ``EXTENSIONS``: the file name suffixes it decodes (lower case, with the dot), claimed by no other kind;
- ``decode(src, cfg, out)``: the clips of the file ``src.path`` (a :class:`~vidgan.ingest.sources.SourceFile`)
  under the caps of ``cfg`` (:class:`~vidgan.ingest.config.IngestConfig`: frames, size, stride, fps, max_pixels,
  max_frames) into ``out`` (:class:`~vidgan.ingest.decode.Decoded`: ``clips`` uint8 [N, T, H, W, 3], ``starts``,
  ``fps``, ``frames_read``), or the reason for none in ``out.error`` (it must not raise for bad input);
- its docstring: what it reads.

Built in: ``video`` (anything FFmpeg reads) and ``tinyvideo`` (TinyVideo JPEGs).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from types import ModuleType

from vidgan.plugins import PluginError, discover

#: the entry-point group through which other packages add source kinds (name = kind, value = module)
ENTRY_POINT_GROUP = "vidgan.ingest_sources"


@functools.cache
def registry() -> dict[str, ModuleType]:
    """Every source kind module by name. PluginError for a name twice, a module without EXTENSIONS or decode,
    or an extension two kinds claim."""
    kinds = discover(sys.modules[__name__], ENTRY_POINT_GROUP, what="source kind")
    owner: dict[str, str] = {}
    for name, module in kinds.items():
        if not isinstance(getattr(module, "EXTENSIONS", None), frozenset | set) or not callable(
                getattr(module, "decode", None)):
            raise PluginError(f"source kind module {module.__name__} needs EXTENSIONS (a set) and decode()")
        for ext in module.EXTENSIONS:
            if ext in owner:
                raise PluginError(f"extension {ext} is claimed by source kinds {owner[ext]!r} and {name!r}")
            owner[ext] = name
    return kinds


def kind_of(path: str | Path) -> str | None:
    """The kind that decodes ``path`` (by its suffix), or None."""
    ext = Path(path).suffix.lower()
    return next((name for name, module in registry().items() if ext in module.EXTENSIONS), None)


def extensions() -> list[str]:
    """Every suffix some kind decodes, sorted."""
    return sorted(ext for module in registry().values() for ext in module.EXTENSIONS)
