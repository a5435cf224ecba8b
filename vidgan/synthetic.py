"""Synthetic clips ("squares"): one coloured square bouncing around a dark background.

Cheap, learnable, deterministic real data for tests, benchmarks and the quick start; the learning score of
:mod:`vidgan.squares_score` checks generated clips against exactly these physics. Batch ``i`` of a stream depends
only on (seed, i), so a resumed run continues the same stream from where it stopped.

How a clip is drawn (all integers, so the physics is exact):

- background: every pixel ``BACKGROUND`` (32) in all three channels;
- square: ``side = max(2, size // 4)`` pixels (8 at 32x32), one colour per clip, each channel uniform in
  ``[96, 224]`` (so its brightest channel is always >= 96, well apart from the background);
- start: the top-left corner uniform over the ``size - side + 1`` positions of each axis;
- velocity: per axis an integer in ``[-MAX_SPEED, MAX_SPEED]`` pixels per frame, not both zero;
- bounce: the square reflects off the walls (position ``p + v t`` folded into ``[0, size - side]`` like a
  triangle wave), so it never sticks to a wall or leaves the frame.

The values keep off the ends of [0, 255]: the generator's tanh would have to saturate to draw a background at 0
(or a channel at 255) exactly, and a saturated tanh passes almost no gradient, which on data that is 94%
background makes an early collapse to one dark output hard to leave.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from vidgan.config import ModelConfig

BACKGROUND = 32
#: the range of a square's channels; its brightest channel is never darker than the lower end
MIN_SQUARE_VALUE = 96
MAX_SQUARE_VALUE = 224
#: the largest speed along one axis, in pixels per frame
MAX_SPEED = 3


def square_side(size: int) -> int:
    """The side of the square in a ``size`` x ``size`` clip."""
    return max(2, size // 4)


def bounce(start: torch.Tensor, velocity: torch.Tensor, steps: torch.Tensor, span: int) -> torch.Tensor:
    """Positions ``start + velocity * t`` reflected off 0 and ``span`` (integer tensors, broadcast)."""
    if span == 0:
        return torch.zeros_like(start * steps)
    q = torch.remainder(start + velocity * steps, 2 * span)
    return span - (q - span).abs()


def squares_trajectories(n: int, frames: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """(top-left positions [n, frames, 2] as (y, x), colours [n, 3] uint8-valued) of ``n`` clips."""
    side = square_side(size)
    span = size - side
    start = torch.randint(0, span + 1, (n, 2), generator=generator)
    velocity = torch.randint(-MAX_SPEED, MAX_SPEED, (n, 2), generator=generator)
    velocity = velocity + (velocity >= 0).long()  # [-MAX_SPEED, MAX_SPEED] without 0 ...
    zero_axis = torch.randint(0, 3, (n,), generator=generator)  # ... then at most one axis set to 0 (a third each)
    velocity[zero_axis == 0, 0] = 0
    velocity[zero_axis == 1, 1] = 0
    colour = torch.randint(MIN_SQUARE_VALUE, MAX_SQUARE_VALUE + 1, (n, 3), generator=generator)
    steps = torch.arange(frames)
    pos = bounce(start[:, None, :], velocity[:, None, :], steps[None, :, None], span)
    return pos, colour


def render_squares(pos: torch.Tensor, colour: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [n, 3, T, size, size] clips from positions [n, T, 2] and colours [n, 3]."""
    side = square_side(size)
    grid = torch.arange(size)
    inside_y = (grid >= pos[..., 0:1]) & (grid < pos[..., 0:1] + side)  # [n, T, size]
    inside_x = (grid >= pos[..., 1:2]) & (grid < pos[..., 1:2] + side)
    mask = inside_y[..., :, None] & inside_x[..., None, :]  # [n, T, H, W]
    clip = torch.where(mask[:, None], colour[:, :, None, None, None], torch.tensor(BACKGROUND))
    return clip.to(torch.uint8)


def squares_clips(n: int, frames: int, size: int, seed: int) -> torch.Tensor:
    """uint8 [n, 3, frames, size, size]: ``n`` squares clips, a function of (n, frames, size, seed) alone."""
    g = torch.Generator().manual_seed(seed)
    pos, colour = squares_trajectories(n, frames, size, g)
    return render_squares(pos, colour, size)


def synthetic_batch(cfg: ModelConfig, batch_size: int, seed: int, index: int) -> torch.Tensor:
    """uint8 [B, 3, T, H, W]: batch ``index`` of the squares stream ``seed``."""
    return squares_clips(batch_size, cfg.frames, cfg.size, seed * 1_000_003 + index)


def synthetic_batches(cfg: ModelConfig, batch_size: int, seed: int = 0, start: int = 0) -> Iterator[torch.Tensor]:
    """Endless stream of :func:`synthetic_batch` from index ``start``."""
    index = start
    while True:
        yield synthetic_batch(cfg, batch_size, seed, index)
        index += 1
