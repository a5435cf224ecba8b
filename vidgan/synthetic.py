"""Synthetic clips: coloured squares moving in straight lines on a dark background.

Cheap, learnable, deterministic real data for tests, benchmarks and the quick-start run without a
dataset. Batch ``i`` of a stream depends only on (seed, i), so a resumed run can continue the same
stream from where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from vidgan.config import ModelConfig


def synthetic_batch(cfg: ModelConfig, batch_size: int, seed: int, index: int) -> torch.Tensor:
    """uint8 [B, 3, T, H, W]: one moving square per clip."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    b, t, s = batch_size, cfg.frames, cfg.size
    side = max(2, s // 4)
    start = torch.rand(b, 2, generator=g) * (s - side)
    velocity = (torch.rand(b, 2, generator=g) - 0.5) * (s / t)
    colour = 64 + (torch.rand(b, 3, generator=g) * 191)
    steps = torch.arange(t, dtype=torch.float32)
    pos = (start[:, None, :] + velocity[:, None, :] * steps[None, :, None]).clamp(0, s - side)  # [B, T, 2]
    grid = torch.arange(s, dtype=torch.float32)
    inside_y = (grid[None, None, :] >= pos[..., 0:1]) & (grid[None, None, :] < pos[..., 0:1] + side)
    inside_x = (grid[None, None, :] >= pos[..., 1:2]) & (grid[None, None, :] < pos[..., 1:2] + side)
    mask = inside_y[..., :, None] & inside_x[..., None, :]  # [B, T, H, W]
    clip = mask[:, None].float() * colour[:, :, None, None, None] + 16.0
    return clip.round().clamp(0, 255).to(torch.uint8)


def synthetic_batches(cfg: ModelConfig, batch_size: int, seed: int = 0, start: int = 0) -> Iterator[torch.Tensor]:
    """Endless stream of :func:`synthetic_batch` from index ``start``."""
    index = start
    while True:
        yield synthetic_batch(cfg, batch_size, seed, index)
        index += 1
