"""Frame geometry: keep the aspect ratio (scale the short side to ``size``, then centre-crop a square).

The paper's code squashed 320x240 UCF-101 frames into 64x64; here a 4:3 frame becomes 85x64 and its
centre 64x64 is kept. Downscaling is antialiased (area averaging in swscale for videos, a Lanczos
filter in Pillow for JPEG frames).
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after scaling so that the short side is ``size``, rounding the long side."""
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid frame size {width}x{height}")
    if width <= height:
        return size, max(size, round(height * size / width))
    return max(size, round(width * size / height)), size


def center_crop(frame: np.ndarray, size: int) -> np.ndarray:
    """The central ``size`` x ``size`` window of an [H, W, C] frame (a view, no copy)."""
    h, w = frame.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return frame[top : top + size, left : left + size]


def resize_crop_image(img: Image.Image, size: int) -> np.ndarray:
    """An RGB Pillow image -> uint8 [size, size, 3], aspect kept, antialiased, centre-cropped."""
    w, h = scaled_size(img.width, img.height, size)
    if (w, h) != img.size:
        img = img.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return center_crop(np.asarray(img.convert("RGB")), size)
