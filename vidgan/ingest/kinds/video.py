"""Videos: anything FFmpeg reads, through PyAV; the first video stream, resampled to ``--fps``, resized and cropped.

A source kind of ``vidgan ingest`` (:mod:`vidgan.ingest.kinds`): the files of :data:`EXTENSIONS` are decoded by
:func:`decode`. Frames larger than ``max_pixels`` are refused before decoding, and decoding stops after
``max_frames`` frames.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vidgan.ingest.config import IngestConfig
from vidgan.ingest.decode import Clipper, Decoded, too_short
from vidgan.ingest.frames import center_crop, scaled_size
from vidgan.ingest.sources import SourceFile

EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".avi", ".webm", ".mov", ".mkv", ".gif", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv", ".3gp"}
)


def video_frames(src: SourceFile, cfg: IngestConfig, out: Decoded) -> Iterator[np.ndarray]:
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


def decode(src: SourceFile, cfg: IngestConfig, out: Decoded) -> None:
    """The clips of a video's first video stream into ``out`` (or the reason for none in ``out.error``)."""
    clipper = Clipper(cfg.frames, cfg.clip_stride)
    for img in video_frames(src, cfg, out):
        clipper.add(img)
    if out.error:
        return
    if not clipper.clips:
        if out.frames_read == 0:
            out.error = "no decodable video frames (truncated, corrupt or not a video)"
        else:
            out.error = too_short(clipper.n, cfg)
        return
    out.clips = np.stack(clipper.clips)
    out.starts = clipper.starts
