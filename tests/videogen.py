"""Test helper: write small real videos (PyAV), TinyVideo JPEGs and bad inputs into a folder."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

CODECS = {".mp4": "libx264", ".avi": "mjpeg", ".gif": "gif", ".webm": "libvpx", ".mov": "mpeg4", ".mkv": "mpeg4"}
PIX_FMT = {"gif": "rgb8", "mjpeg": "yuvj420p"}


def frame_pattern(i: int, width: int, height: int) -> np.ndarray:
    """A moving colour pattern, frame ``i``: uint8 [H, W, 3]."""
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 255 // max(1, width - 1) + 8 * i) % 256
    g = (y * 255 // max(1, height - 1)) % 256
    b = ((x + y + 4 * i) % 64) * 4
    return np.stack([r, g, b], -1).astype(np.uint8)


def write_video(path: Path, frames: int = 40, width: int = 80, height: int = 60, fps: int = 25,
                codec: str | None = None) -> Path:
    """Encode ``frames`` frames of the pattern into ``path`` (container from the extension)."""
    codec = codec or CODECS[path.suffix.lower()]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps))
        s.width, s.height = width, height
        s.pix_fmt = PIX_FMT.get(codec, "yuv420p")
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An .mp4 (or other container) holding one AAC audio stream and no video."""
    rate = 44100
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=rate)
        n = int(seconds * rate)
        t = np.arange(n) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for off in range(0, n, 1024):
            chunk = samples[off : off + 1024]
            fr = av.AudioFrame.from_ndarray(np.tile(chunk, (2, 1)), format="fltp", layout="stereo")
            fr.sample_rate = rate
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def write_tinyvideo(path: Path, frames: int = 32, width: int = 64, height: int | None = None) -> Path:
    """A TinyVideo clip: ``frames`` WxW frames stacked vertically in one JPEG (or a wrong ``height``)."""
    stack = np.concatenate([frame_pattern(i, width, width) for i in range(frames)], axis=0)
    if height is not None:
        stack = np.resize(stack, (height, width, 3))
    Image.fromarray(stack).save(path, quality=90)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_gap_video(path: Path, frames: int = 40, gap_s: float = 10**6, fps: int = 25, width: int = 32,
                    height: int = 32) -> Path:
    """A .mkv whose second half is stamped ``gap_s`` seconds after its first (a hostile timestamp gap): resampling
    it to ``fps`` would repeat one frame ``gap_s * fps`` times. A few KB."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"bf": "0"}

        def mux(packets: list) -> None:
            for pkt in packets:
                if pkt.pts is not None and pkt.pts * pkt.time_base >= Fraction(frames // 2, fps):
                    shift = int(gap_s / pkt.time_base)
                    pkt.pts += shift
                    pkt.dts += shift
                c.mux(pkt)

        for i in range(frames):
            mux(s.encode(av.VideoFrame.from_ndarray(frame_pattern(i, width, height), format="rgb24")))
        mux(s.encode())
    return path
