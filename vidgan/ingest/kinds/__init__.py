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

from vidgan.plugins import discover, skip

#: the entry-point group through which other packages add source kinds (name = kind, value = module)
ENTRY_POINT_GROUP = "vidgan.ingest_sources"


def _lacks(module: ModuleType) -> str | None:
    """What a source kind module lacks (``EXTENSIONS`` as a set of suffixes, a callable ``decode``), or None."""
    exts = getattr(module, "EXTENSIONS", None)
    if not isinstance(exts, frozenset | set) or not all(isinstance(e, str) for e in exts):
        return "needs EXTENSIONS (a set of suffixes such as '.mp4')"
    if not callable(getattr(module, "decode", None)):
        return "needs a decode(src, cfg, out) function"
    return None


@functools.cache
def registry() -> dict[str, ModuleType]:
    """Every source kind module by name. PluginError for a built-in module without EXTENSIONS or decode, or an
    extension two built-in kinds claim; a plug-in with either problem, or one that claims an extension a kind
    already decodes, is left out with a warning (:mod:`vidgan.plugins`)."""
    kinds = discover(sys.modules[__name__], ENTRY_POINT_GROUP, what="source kind", check=_lacks)
    owner: dict[str, str] = {}
    for name, module in list(kinds.items()):
        taken = sorted(ext for ext in module.EXTENSIONS if ext in owner)
        if taken:
            del kinds[name]
            skip(module, "source kind", f"claims {', '.join(taken)}, which source kind {owner[taken[0]]!r} decodes")
            continue
        owner.update(dict.fromkeys(module.EXTENSIONS, name))
    return kinds


def kind_of(path: str | Path) -> str | None:
    """The kind that decodes ``path`` (by its suffix), or None."""
    ext = Path(path).suffix.lower()
    return next((name for name, module in registry().items() if ext in module.EXTENSIONS), None)


def extensions() -> list[str]:
    """Every suffix some kind decodes, sorted."""
    return sorted(ext for module in registry().values() for ext in module.EXTENSIONS)
