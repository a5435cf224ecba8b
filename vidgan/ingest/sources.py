"""Source discovery: turn the command line's SOURCE arguments into a list of files to decode.

A SOURCE is a video file, a TinyVideo JPEG, a directory (walked recursively, following directory
symlinks but never twice into the same real directory, so symlink loops end) or an index file
(``.txt``/``.lst``/``.list``: one path per line, relative to the index file's folder; anything after
whitespace on a line is ignored, as in UCF-101's ``trainlist01.txt``).

Each file gets a *key*: its path relative to the root it was found under (the directory argument, the
index file's folder, or the file's own folder). The label is the name of the folder the file sits in,
relative to that root (UCF-101: ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi`` -> ``ApplyEyeMakeup``);
files directly in the root have no label. Things that cannot be sources are returned as skips.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import SyntheticSpec

INDEX_EXTS = frozenset({".txt", ".lst", ".list"})


@dataclass(frozen=True)
class SourceFile:
    """One file to decode: where it is, its key in the manifest, its kind and label."""

    path: str
    key: str
    kind: str  # a source kind of vidgan.ingest.kinds: "video", "tinyvideo", one a package adds; or "squares" (made)
    label: str | None


@dataclass(frozen=True)
class Skip:
    """A source that was not decoded, and why."""

    key: str
    reason: str


def _kind(path: Path) -> str | None:
    from .kinds import kind_of

    return kind_of(path)


def _file(path: Path, root: Path) -> SourceFile | Skip:
    rel = Path(os.path.relpath(path, root))
    key = rel.as_posix()
    kind = _kind(path)
    if kind is None:
        from .kinds import registry

        return Skip(key, f"unsupported file type {path.suffix or '(no extension)'!r}: no source kind reads it "
                         f"({', '.join(registry())})")
    label = rel.parent.name if rel.parent != Path(".") else None
    return SourceFile(str(path), key, kind, label or None)


def _walk(root: Path) -> list[SourceFile | Skip]:
    """All files under ``root``, sorted, with symlink loops detected and reported."""
    out: list[SourceFile | Skip] = []
    seen: set[str] = set()

    def visit(d: Path) -> None:
        real = os.path.realpath(d)
        if real in seen:
            key = Path(os.path.relpath(d, root)).as_posix()
            out.append(Skip(key, f"directory symlink loop: {key} -> {real} was already visited"))
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            key = Path(os.path.relpath(d, root)).as_posix()
            out.append(Skip(key, f"cannot list directory: {e.strerror or e}"))
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            p = Path(e.path)
            try:
                is_dir = e.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                visit(p)
            elif e.is_symlink() and not p.exists():
                out.append(Skip(p.relative_to(root).as_posix(), "broken symlink"))
            else:
                out.append(_file(p, root))

    visit(root)
    return out


def _index(index: Path) -> list[SourceFile | Skip]:
    root = index.parent
    out: list[SourceFile | Skip] = []
    try:
        lines = index.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        return [Skip(index.name, f"cannot read index file: {e.strerror or e}")]
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rel = Path(line.split()[0])
        p = rel if rel.is_absolute() else root / rel
        if p.is_dir():
            out.extend(_walk(p))
        elif p.exists():
            out.append(_file(p, root))
        else:
            out.append(Skip(rel.as_posix(), f"listed in index {index.name} but does not exist"))
    if not any(isinstance(x, SourceFile) for x in out) and not out:
        out.append(Skip(index.name, "index file lists no paths"))
    return out


def discover(sources: list[str]) -> list[SourceFile | Skip]:
    """Expand SOURCE arguments into files and skips; keys are made unique across roots."""
    found: list[SourceFile | Skip] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            found.extend(_walk(p))
        elif p.is_file() and p.suffix.lower() in INDEX_EXTS:
            found.extend(_index(p))
        elif p.exists() or p.is_symlink():
            found.append(_file(p, p.parent) if p.exists() else Skip(p.name, "broken symlink"))
        else:
            found.append(Skip(s, "no such file or directory"))
    # The same key from two roots (e.g. two folders both holding a.mp4): qualify the later ones.
    out: list[SourceFile | Skip] = []
    keys: set[str] = set()
    paths: set[str] = set()
    for x in found:
        if isinstance(x, SourceFile):
            real = os.path.realpath(x.path)
            if real in paths:  # the same file reached twice (listed twice, or through a symlink)
                continue
            paths.add(real)
        key = x.key
        n = 1
        while key in keys:
            n += 1
            key = f"{x.key}#{n}"
        keys.add(key)
        if key != x.key:
            x = SourceFile(x.path, key, x.kind, x.label) if isinstance(x, SourceFile) else Skip(key, x.reason)
        out.append(x)
    return out



#: clips per synthetic source: each chunk is one entry of the manifest, so an interrupted ingest resumes by chunk
SYNTHETIC_CHUNK = 256


def synthetic_sources(spec: SyntheticSpec, chunk: int = SYNTHETIC_CHUNK) -> list[SourceFile]:
    """The clips of a synthetic dataset as sources of ``chunk`` clips each.

    Chunk ``i`` holds :func:`vidgan.synthetic.squares_clips` of seed ``spec.seed * 1_000_003 + i`` (batch ``i`` of
    the ``spec.seed`` stream at a batch size of ``chunk``); its path says so and its key is unique per chunk, so
    the same command resumes where it stopped.
    """
    out = []
    for i, first in enumerate(range(0, spec.clips, chunk)):
        n = min(chunk, spec.clips - first)
        path = f"{spec.kind}://seed={spec.seed}/chunk={i}/clips={n}"
        out.append(SourceFile(path, f"{spec.kind}/seed-{spec.seed}/{first:07d}+{n}", spec.kind, None))
    return out


def synthetic_params(src: SourceFile) -> dict[str, int]:
    """(seed, chunk, clips) of a synthetic source's path, as made by :func:`synthetic_sources`."""
    body = src.path.split("://", 1)[1]
    return {k: int(v) for k, v in (part.split("=") for part in body.split("/"))}
