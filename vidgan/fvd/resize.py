"""TF1's legacy ``tf.image.resize_bilinear`` (align_corners=False, half_pixel_centers=False), in PyTorch.

The canonical FVD resizes every frame to 224x224 this way. For output index ``i`` of a dimension resized
from ``n_in`` to ``n_out``: ``src = i * (n_in / n_out)`` (float32), ``lo = floor(src)``,
``hi = min(lo + 1, n_in - 1)``, ``w = src - lo``; the columns are blended first, then the rows, in the same
order of float32 operations as TensorFlow's kernel. No antialiasing, no crop, no rounding.
PyTorch's ``F.interpolate(mode="bilinear", align_corners=False)`` samples at half-pixel centres instead and
gives different numbers.
"""

from __future__ import annotations

import numpy as np
import torch


def legacy_coords(n_in: int, n_out: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """(lo, hi, weight) index/weight tensors of one resized dimension, as TF1's legacy scaler computes them."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.arange(n_out, dtype=np.float32) * scale
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (src - lo.astype(np.float32)).astype(np.float32)
    return (
        torch.from_numpy(lo).to(device),
        torch.from_numpy(hi).to(device),
        torch.from_numpy(w).to(device),
    )


def resize_bilinear_tf1(frames: torch.Tensor, size: int | tuple[int, int] = 224) -> torch.Tensor:
    """Resize channels-last frames ``[..., H, W, C]`` to ``[..., size, size, C]`` as float32.

    Integer inputs are converted to float32 first (as TF does); the result is not rounded.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    x = frames if frames.dtype == torch.float32 else frames.to(torch.float32)
    h, w = x.shape[-3], x.shape[-2]
    if (h, w) == (out_h, out_w):
        return x  # TF's kernel is the identity at scale 1
    xlo, xhi, xw = legacy_coords(w, out_w, x.device)
    ylo, yhi, yw = legacy_coords(h, out_h, x.device)
    # Columns first: left + (right - left) * x_lerp, for every input row.
    left = x.index_select(-2, xlo)
    right = x.index_select(-2, xhi)
    cols = left + (right - left) * xw[:, None]
    # Then rows: top + (bottom - top) * y_lerp.
    top = cols.index_select(-3, ylo)
    bottom = cols.index_select(-3, yhi)
    return top + (bottom - top) * yw[:, None, None]
