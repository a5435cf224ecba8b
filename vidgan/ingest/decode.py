"""Decoding one source into clips: videos through PyAV (anything FFmpeg reads), TinyVideo JPEGs with Pillow.

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
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .config import IngestConfig
from .frames import center_crop, resize_crop_image, scaled_size
from .sources import SourceFile

#: Frame rate recorded for TinyVideo clips, whose JPEGs carry none (0 means unknown).
TINYVIDEO_FPS = 0.0


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


class _Clipper:
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


def _too_short(n: int, cfg: IngestConfig, unit: str = "frames") -> str:
    rate = f" at {cfg.fps:g} fps" if cfg.fps else ""
    return f"too short: {n} {unit}{rate}, fewer than one clip of {cfg.frames} frames"


def _video_frames(src: SourceFile, cfg: IngestConfig, out: Decoded) -> Iterator[np.ndarray]:
    """Decode, resample and resize the frames of the first video stream; sets out.fps/error/warning."""
    import av

    try:
        container = av.open(src.path, metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as e:
        out.error = f"not a readable video (FFmpeg: {e})"
        return
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            out.error = f"no video stream (streams: {', '.join(kinds)}; audio-only or not a video)"
            return
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        cc = stream.codec_context
        if cc.width and cc.height and cc.width * cc.height > cfg.max_pixels:
            out.error = f"frame size {cc.width}x{cc.height} exceeds the cap of {cfg.max_pixels} pixels"
            return
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        src_fps = float(rate) if rate else None
        out.fps = float(cfg.fps or src_fps or 25.0)
        step = 1.0 / cfg.fps if cfg.fps else None
        half = 0.5 / (src_fps or cfg.fps or 25.0)
        next_t, t0, emitted, geometry = 0.0, None, 0, None
        try:
            for frame in container.decode(stream):
                out.frames_read += 1
                if out.frames_read > cfg.max_frames or emitted >= cfg.max_frames:
                    out.warning = f"stopped at the cap of {cfg.max_frames} frames per source"
                    return
                if frame.width * frame.height > cfg.max_pixels:
                    out.error = f"frame size {frame.width}x{frame.height} exceeds the cap of {cfg.max_pixels} pixels"
                    return
                repeat = 1
                if step is not None:
                    t = frame.time if frame.time is not None else (out.frames_read - 1) / (src_fps or cfg.fps)
                    t0 = t if t0 is None else t0
                    t -= t0
                    repeat = 0
                    while next_t < t + half:  # frames due by this one's time: a timestamp gap repeats it
                        if emitted + repeat >= cfg.max_frames:  # the cap counts frames produced, repeats too
                            out.warning = f"stopped at the cap of {cfg.max_frames} frames per source"
                            break
                        repeat += 1
                        next_t += step
                    if repeat == 0:
                        continue
                if geometry != (frame.width, frame.height):
                    geometry = (frame.width, frame.height)
                    w, h = scaled_size(frame.width, frame.height, cfg.size)
                rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
                img = np.ascontiguousarray(center_crop(rgb, cfg.size))
                for _ in range(repeat):
                    emitted += 1
                    yield img
        except (av.error.FFmpegError, OSError, ValueError) as e:
            msg = f"decoding failed after {out.frames_read} frames (FFmpeg: {e})"
            if emitted >= cfg.frames:
                out.warning = msg + "; clips before the failure kept"
            else:
                out.error = "truncated or corrupt: " + msg


def _decode_video(src: SourceFile, cfg: IngestConfig, out: Decoded) -> None:
    clipper = _Clipper(cfg.frames, cfg.clip_stride)
    for img in _video_frames(src, cfg, out):
        clipper.add(img)
    if out.error:
        return
    if not clipper.clips:
        if out.frames_read == 0:
            out.error = "no decodable video frames (truncated, corrupt or not a video)"
        else:
            out.error = _too_short(clipper.n, cfg)
        return
    out.clips = np.stack(clipper.clips)
    out.starts = clipper.starts


def _decode_tinyvideo(src: SourceFile, cfg: IngestConfig, out: Decoded) -> None:
    from PIL import Image, UnidentifiedImageError

    out.fps = TINYVIDEO_FPS
    try:
        with Image.open(src.path) as img:
            if img.format != "JPEG":
                out.error = f"not a JPEG (Pillow reads it as {img.format})"
                return
            w, h = img.size
            if w * w > cfg.max_pixels or h > w * cfg.max_frames:
                out.error = f"image {w}x{h} exceeds the caps ({cfg.max_pixels} pixels a frame, {cfg.max_frames} frames)"
                return
            if h % w != 0:
                out.error = (
                    f"wrong height for a TinyVideo JPEG: {w}x{h} is not a stack of {w}x{w} frames "
                    f"(height must be a multiple of the width, e.g. {w}x{w * cfg.frames} for {cfg.frames} frames)"
                )
                return
            n = h // w
            out.frames_read = n
            if n < cfg.frames:
                out.error = _too_short(n, cfg, unit=f"{w}x{w} frames (image {w}x{h})")
                return
            rgb = img.convert("RGB")
            frames = [resize_crop_image(rgb.crop((0, i * w, w, (i + 1) * w)), cfg.size) for i in range(n)]
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as e:
        out.error = f"not a readable JPEG ({type(e).__name__}: {e})"
        return
    if cfg.fps:
        out.warning = "TinyVideo JPEGs carry no frame rate: --fps ignored"
    starts = list(range(0, n - cfg.frames + 1, cfg.clip_stride))
    out.clips = np.stack([np.stack(frames[s : s + cfg.frames]) for s in starts])
    out.starts = starts


def decode_source(src: SourceFile, cfg: IngestConfig) -> Decoded:
    """Decode one source into clips, or explain in ``error`` why it has none. Never raises for bad input."""
    out = Decoded(src)
    reason = _check_readable(src.path)
    if reason:
        out.error = reason
        return out
    try:
        if src.kind == "tinyvideo":
            _decode_tinyvideo(src, cfg, out)
        else:
            _decode_video(src, cfg, out)
    except MemoryError:
        out.clips, out.starts = None, []
        out.error = "out of memory while decoding (lower --max-frames / --max-pixels)"
    if out.error:
        out.clips, out.starts = None, []
    return out
