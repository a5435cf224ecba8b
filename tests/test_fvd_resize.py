"""The TF1 legacy bilinear resize (align_corners=False, half_pixel_centers=False) of the canonical FVD."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vidgan.fvd.resize import resize_bilinear_tf1


def _reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Plain-loop transcription of TF1's legacy resize_bilinear kernel for one [H, W, C] image.

    Like TF, the scale and the source coordinates are float32 (at 256 -> 224 the float32 rounding of the
    coordinate alone moves values by ~1e-3); the blending is done in float64 here.
    """
    h, w, _ = img.shape
    f32 = np.float32
    out = np.empty((out_h, out_w, img.shape[2]))
    for y in range(out_h):
        sy = float(f32(y) * (f32(h) / f32(out_h)))
        y0 = int(np.floor(sy))
        y1, ly = min(y0 + 1, h - 1), sy - y0
        for x in range(out_w):
            sx = float(f32(x) * (f32(w) / f32(out_w)))
            x0 = int(np.floor(sx))
            x1, lx = min(x0 + 1, w - 1), sx - x0
            top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * lx
            bottom = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * lx
            out[y, x] = top + (bottom - top) * ly
    return out


def test_known_values_upsampling_repeats_the_edge() -> None:
    # 4 -> 8: sample points 0, .5, 1, ..., 3.5; the last one clamps to the last pixel (no half-pixel shift).
    row = torch.tensor([0.0, 10.0, 20.0, 30.0]).reshape(1, 4, 1).expand(4, 4, 1)
    out = resize_bilinear_tf1(row, (4, 8))
    np.testing.assert_array_equal(out[0, :, 0].numpy(), [0, 5, 10, 15, 20, 25, 30, 30])


def test_matches_loop_reference_up_and_down() -> None:
    rng = np.random.default_rng(0)
    for h, w, oh, ow in [(7, 5, 224, 224), (256, 300, 224, 224), (5, 9, 3, 4)]:
        img = rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)
        ours = resize_bilinear_tf1(torch.from_numpy(img), (oh, ow)).numpy()
        assert ours.dtype == np.float32 and ours.shape == (1, oh, ow, 3)
        np.testing.assert_allclose(ours[0], _reference(img[0].astype(np.float64), oh, ow), atol=2e-4)


def test_differs_from_half_pixel_interpolate() -> None:
    img = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8))
    ours = resize_bilinear_tf1(img, 224)
    theirs = F.interpolate(img.permute(0, 3, 1, 2).float(), size=224, mode="bilinear", align_corners=False)
    assert (ours - theirs.permute(0, 2, 3, 1)).abs().max() > 10.0


def test_identity_at_224_and_leading_dims() -> None:
    x = torch.rand(2, 3, 224, 224, 3) * 255
    assert torch.equal(resize_bilinear_tf1(x, 224), x)
    assert resize_bilinear_tf1(torch.zeros(2, 3, 16, 16, 3, dtype=torch.uint8), 224).shape == (2, 3, 224, 224, 3)
