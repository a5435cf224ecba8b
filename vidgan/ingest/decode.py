"""Decoding one source into clips, by its source kind (:mod:`vidgan.ingest.kinds`: videos through PyAV, TinyVideo
JPEGs with Pillow, and any kind a package adds).

:func:`decode_source` never raises for bad input: it returns a :class:`Decoded` whose ``error`` says
why the source gave no clips (empty, unreadable, not a video, audio only, too short, too large, ...).
Memory stays bounded by the caps in :class:`~vidgan.ingest.config.IngestConfig`: frames larger than
``max_pixels`` are refused before decoding, and decoding stops after ``max_frames`` frames read or produced
(resampling to ``--fps`` repeats a frame to fill a timestamp gap: those repeats count).
This module is imported inside Ray tasks; it must not import Ray.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .config import IngestConfig
from .sources import SourceFile


@dataclass
class Decoded:
    """The clips of one source (uint8 [N, T, H, W, 3]) with their start frames, or the reason for none."""

    source: SourceFile
    clips: np.ndarray | None = None
    starts: list[int] = field(default_factory=list)
    fps: float = 0.0
    frames_read: int = 0
    error: str | None = None
    warning: str | None = None

    @property
    def n_clips(self) -> int:
        return 0 if self.clips is None else int(self.clips.shape[0])


class Clipper:
    """Cuts a stream of frames into clips of ``frames`` frames, one every ``stride`` frames."""

    def __init__(self, frames: int, stride: int) -> None:
        self.t, self.s = frames, stride
        self.buf: deque[np.ndarray] = deque(maxlen=frames)
        self.n = 0
        self.clips: list[np.ndarray] = []
        self.starts: list[int] = []

    def add(self, frame: np.ndarray) -> None:
        self.buf.append(frame)
        self.n += 1
        start = self.n - self.t
        if start >= 0 and start % self.s == 0:
            self.clips.append(np.stack(self.buf))
            self.starts.append(start)


def _check_readable(path: str) -> str | None:
    """A reason the file cannot be read, or None. Opens it with Python so errors are plain OSErrors."""
    try:
        size = os.stat(path).st_size
        if size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as f:
            f.read(16)
    except PermissionError as e:
        return f"unreadable: permission denied ({e.strerror or e})"
    except IsADirectoryError:
        return "is a directory"
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    return None


def too_short(n: int, cfg: IngestConfig, unit: str = "frames") -> str:
    rate = f" at {cfg.fps:g} fps" if cfg.fps else ""
    return f"too short: {n} {unit}{rate}, fewer than one clip of {cfg.frames} frames"


def decode_source(src: SourceFile, cfg: IngestConfig) -> Decoded:
    """Decode one source into clips, or explain in ``error`` why it has none. Never raises for bad input."""
    from .kinds import registry

    out = Decoded(src)
    kind = registry()[src.kind]
    reason = None if getattr(kind, "SYNTHETIC", False) else _check_readable(src.path)  # a made kind reads no file
    if reason:
        out.error = reason
        return out
    try:
        kind.decode(src, cfg, out)
    except MemoryError:
        out.clips, out.starts = None, []
        out.error = "out of memory while decoding (lower --max-frames / --max-pixels)"
    except Exception as e:  # noqa: BLE001 - a decoder (a plug-in's) that raises costs its source only
        detail = " ".join(str(e).split())[:200]
        out.error = f"the {src.kind} decoder ({kind.__name__}) failed: {type(e).__name__}: {detail}"
    if not out.error:
        out.error = _bad_output(out, cfg, kind.__name__)
    if out.error:
        out.clips, out.starts = None, []
    return out


def _bad_output(out: Decoded, cfg: IngestConfig, decoder: str) -> str | None:
    """Why what a decoder left in ``out`` is not clips (uint8 [N, frames, size, size, 3] with N start frames), or
    None: a decoder that returns garbage costs its source only, never the shards."""
    clips, want = out.clips, (cfg.frames, cfg.size, cfg.size, 3)
    if clips is None:
        return None  # no clips and no reason: recorded as "no clips"
    if not isinstance(clips, np.ndarray) or clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[1:] != want:
        got = f"{clips.dtype} {list(clips.shape)}" if isinstance(clips, np.ndarray) else type(clips).__name__
        shape = ", ".join(map(str, want))
        return f"the {out.source.kind} decoder ({decoder}) returned {got}, not uint8 clips [N, {shape}]"
    if not isinstance(out.starts, list | tuple) or len(out.starts) != len(clips):
        return f"the {out.source.kind} decoder ({decoder}) returned {len(clips)} clips but not as many start frames"
    return None
