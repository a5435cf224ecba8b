"""Sample videos for humans: a grid of clips encoded with PyAV (GIF for in-browser preview, H.264 MP4)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import av
import numpy as np
import torch


def to_uint8_clips(videos: torch.Tensor) -> np.ndarray:
    """Generator output [N, 3, T, H, W] in [-1, 1] -> uint8 [N, T, H, W, 3]."""
    x = ((videos.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 4, 1).cpu().numpy()


def sample_clips(generator: torch.nn.Module, z: torch.Tensor) -> np.ndarray:
    """uint8 clips [N, T, H, W, 3] the generator makes from latents ``z`` (its train/eval mode is kept)."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        with torch.inference_mode():
            return to_uint8_clips(generator(z.to(device)))
    finally:
        generator.train(was_training)


def tile(clips: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """uint8 clips [N, T, H, W, 3] -> one video [T, rows*(H+pad)-pad, cols*(W+pad)-pad, 3] (grey gaps)."""
    n, t, h, w, c = clips.shape
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((t, rows * (h + pad) - pad, cols * (w + pad) - pad, c), 128, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[:, r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = clips[i]
    return grid


#: how much sample images and videos are enlarged for people (nearest neighbour: pixels stay sharp squares)
DISPLAY_SCALE = 4


def enlarge(images: np.ndarray, scale: int = DISPLAY_SCALE) -> np.ndarray:
    """uint8 images [..., H, W, C] enlarged ``scale`` times by nearest neighbour (each pixel a square)."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if scale == 1:
        return images
    return np.repeat(np.repeat(images, scale, axis=-3), scale, axis=-2)


def strip(
    clips: np.ndarray, n_clips: int = 4, n_frames: int = 4, scale: int = DISPLAY_SCALE, pad: int = 1
) -> np.ndarray:
    """One image of clips as rows of frames: the first ``n_clips`` clips [N, T, H, W, 3], each as ``n_frames``
    frames evenly spaced from first to last, grey gaps of ``pad`` pixels, enlarged ``scale`` times.
    Returns uint8 [rows*(H+pad)-pad, cols*(W+pad)-pad, 3] * scale, ready for a PNG (``MlflowClient.log_image``).
    4 x 4 by default: about square, as MLflow's image grid shows every image in a square cell."""
    n, t, h, w, c = clips.shape
    rows, cols = min(n, n_clips), min(t, n_frames)
    if rows == 0:
        raise ValueError("no clips to show")
    picked = np.linspace(0, t - 1, cols).round().astype(int)
    image = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), 128, np.uint8)
    for r in range(rows):
        for q, f in enumerate(picked):
            image[r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = clips[r, f]
    return enlarge(image, scale)


def write_video(frames: np.ndarray, path: str | os.PathLike, fps: int = 8) -> Path:
    """Encode uint8 frames [T, H, W, 3] as GIF or H.264 MP4, chosen by the file suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"unsupported video suffix {suffix!r}: use .gif or .mp4")
    t, h, w, _ = frames.shape
    if suffix == ".mp4":  # yuv420p wants even sizes
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = h + h % 2, w + w % 2
    with av.open(str(path), "w") as container:
        if suffix == ".gif":
            stream = container.add_stream("gif", rate=fps)
            stream.pix_fmt = "rgb8"
        else:
            stream = container.add_stream("libx264", rate=fps)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18"}
        stream.width, stream.height = w, h
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
