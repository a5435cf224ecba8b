"""TinyVideo JPEGs: one clip's frames stacked vertically in a JPEG (Vondrick et al.'s golf/beach sets), with Pillow.

A source kind of ``vidgan ingest`` (:mod:`vidgan.ingest.kinds`): the files of :data:`EXTENSIONS` are decoded by
:func:`decode`; a W x (n W) image holds n frames of W x W.
"""

from __future__ import annotations

import numpy as np

from vidgan.ingest.config import IngestConfig
from vidgan.ingest.decode import Decoded, too_short
from vidgan.ingest.frames import resize_crop_image
from vidgan.ingest.sources import SourceFile

EXTENSIONS = frozenset({".jpg", ".jpeg"})
#: Frame rate recorded for TinyVideo clips, whose JPEGs carry none (0 means unknown).
FPS = 0.0


def decode(src: SourceFile, cfg: IngestConfig, out: Decoded) -> None:
    """The clips of a TinyVideo JPEG (frames stacked vertically) into ``out`` (or the reason for none)."""
    from PIL import Image, UnidentifiedImageError

    out.fps = FPS
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
                out.error = too_short(n, cfg, unit=f"{w}x{w} frames (image {w}x{h})")
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
