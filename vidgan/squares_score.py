"""A learning score for the squares data (:mod:`vidgan.synthetic`) that needs no I3D: the data's own physics.

Given uint8 clips ``[N, T, H, W, 3]`` (generated, or real for the reference), for every frame:

1. **foreground**: pixels whose brightest channel exceeds ``threshold`` (64: halfway between the background,
   32, and the darkest a square's brightest channel can be, 96);
2. **one square**: the frame's foreground is exactly one 4-connected component, whose bounding box is
   ``side`` +- ``tolerance`` pixels on both axes (``side`` as drawn, 8 at 32x32) and which fills >= 80% of that
   box. Any other foreground pixel, however small, fails the frame: the background must be clean.

and for every clip:

3. **smooth motion**: every frame holds one square, the square moves (mean step >= 0.5 pixel per frame), and
   along each axis its top-left corner moves at constant velocity between bounces: every second difference
   ``p[t+1] - 2 p[t] + p[t-1]`` is at most ``tolerance`` in size, except where the square is within
   ``MAX_SPEED + tolerance`` pixels of a wall at ``t`` (a bounce).

How far a generator that draws no square yet has got (graded, where the fractions above are all or nothing):
**one object**, the fraction of frames whose foreground is exactly one component of any size and shape, on a
background that covers at least half the frame (grey noise above the threshold everywhere is one component too,
but no object); and of
each frame's largest component (over frames with any foreground; 0 when none has), the **object side**, the mean
of its bounding box's height and width in pixels (8 at 32x32 for real clips), and the **object fill**, the
fraction of that box it covers (1.0 for a square, ~0.79 for a disc).

Also reported: **background error**, the mean absolute difference from the background value (32) of every pixel
outside the detected square's box grown by one pixel (all pixels for frames with no single component; 0-255
units); and **diversity**, the standard deviation of a pixel across clips, averaged over pixels and frames
(0-255 units), which a generator that ignores its latent drives to 0.

Real clips score ``one_square = smooth_motion = 1.0`` and ``background_error = 0``; an untrained generator,
whose output is grey noise, scores 0 on both fractions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from vidgan.synthetic import BACKGROUND, MAX_SPEED, MIN_SQUARE_VALUE, square_side

THRESHOLD = (BACKGROUND + MIN_SQUARE_VALUE) // 2


@dataclass(frozen=True)
class SquaresScore:
    """The learning score of a set of clips (see the module's docstring)."""

    one_square: float  # fraction of frames holding exactly one square of the right size on a clean background
    smooth_motion: float  # fraction of clips whose square moves at constant velocity between bounces
    background_error: float  # mean |pixel - 32| outside the square, 0-255
    diversity: float  # SD of a pixel across clips, 0-255
    n_clips: int
    one_object: float = 0.0  # fraction of frames with one component, any size or shape, on >= half background
    object_side: float = 0.0  # mean bounding-box side of each frame's largest component, pixels
    object_fill: float = 0.0  # mean fraction of that box the component covers

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class _Frame:
    """One frame's foreground, as the score reads it."""

    components: int
    background: float  # the fraction of the frame below the threshold
    square: bool  # exactly one component, a filled box of the right side
    corner: tuple[int, int]  # the square's top-left (y, x)
    box: tuple[slice, slice]  # the square's box
    largest: tuple[float, float] | None  # (box side, fill) of the largest component; None without foreground


def _frame(fg: np.ndarray, side: int, tolerance: int) -> _Frame:
    """How one frame's foreground mask [H, W] reads: its components, and whether it is one square."""
    labels, n = ndimage.label(fg)
    if n == 0:
        return _Frame(0, 1.0, False, (0, 0), (slice(0, 0), slice(0, 0)), None)
    sizes = np.bincount(labels.ravel())[1:]
    biggest = int(sizes.argmax())
    box = ndimage.find_objects(labels)[biggest]
    h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
    fill = float(sizes[biggest]) / (h * w)
    square = n == 1 and abs(h - side) <= tolerance and abs(w - side) <= tolerance and fill >= 0.8
    return _Frame(n, 1.0 - float(fg.mean()), bool(square), (box[0].start, box[1].start), box, ((h + w) / 2, fill))


def _smooth(track: np.ndarray, span: int, tolerance: int) -> bool:
    """Whether top-left positions [T, 2] move at constant velocity between bounces."""
    steps = np.abs(np.diff(track, axis=0)).sum(1)
    if len(track) < 2 or steps.mean() < 0.5:
        return False
    accel = np.abs(track[2:] - 2 * track[1:-1] + track[:-2])  # [T-2, 2]
    near_wall = (track[1:-1] <= MAX_SPEED + tolerance) | (track[1:-1] >= span - MAX_SPEED - tolerance)
    return bool(((accel <= tolerance) | near_wall).all())


def squares_score(clips: np.ndarray, tolerance: int = 1, threshold: int = THRESHOLD) -> SquaresScore:
    """Score uint8 clips ``[N, T, H, W, 3]`` against the squares' physics (the module's docstring says how)."""
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.shape[-1] != 3 or clips.shape[2] != clips.shape[3]:
        raise ValueError(f"expected uint8 clips [N, T, H, W, 3] with H == W, got {clips.shape}")
    n, t, size = clips.shape[0], clips.shape[1], clips.shape[2]
    side = square_side(size)
    fg = clips.max(-1) > threshold  # [N, T, H, W]
    grey_err = np.abs(clips.astype(np.float32) - BACKGROUND).mean(-1)  # [N, T, H, W]
    good_frames, smooth_clips, single, errors, largest = 0, 0, 0, [], []
    for i in range(n):
        track, all_good = [], True
        for j in range(t):
            frame = _frame(fg[i, j], side, tolerance)
            single += frame.components == 1 and frame.background >= 0.5
            if frame.largest is not None:
                largest.append(frame.largest)
            outside = np.ones((size, size), bool)
            if frame.square:
                good_frames += 1
                track.append(frame.corner)
                y, x = frame.box
                outside[max(y.start - 1, 0) : y.stop + 1, max(x.start - 1, 0) : x.stop + 1] = False
            else:
                all_good = False
            errors.append(grey_err[i, j][outside].mean() if outside.any() else 0.0)
        if all_good and _smooth(np.array(track, dtype=np.int64), size - side, tolerance):
            smooth_clips += 1
    return SquaresScore(
        one_square=good_frames / (n * t),
        smooth_motion=smooth_clips / n,
        background_error=float(np.mean(errors)),
        diversity=float(clips.astype(np.float32).std(0).mean()) if n > 1 else 0.0,
        n_clips=n,
        one_object=single / (n * t),
        object_side=float(np.mean([s for s, _ in largest])) if largest else 0.0,
        object_fill=float(np.mean([f for _, f in largest])) if largest else 0.0,
    )
