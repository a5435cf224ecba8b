"""FVDEvaluator on a tiny generator (BatchNorm in train mode): fixed latents, mode restored, frame handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vidgan.fvd import FVDEvaluator


class TinyGenerator(nn.Module):
    def __init__(self, z_dim: int = 8, frames: int = 10, size: int = 8) -> None:
        super().__init__()
        self.z_dim, self.shape = z_dim, (3, frames, size, size)
        self.fc = nn.Linear(z_dim, 3 * frames * size * size)
        self.bn = nn.BatchNorm1d(3 * frames * size * size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.bn(self.fc(z))).view(-1, *self.shape)


def test_evaluate_fixed_latents_and_mode_restored() -> None:
    torch.manual_seed(0)
    gen = TinyGenerator().train()
    running_mean = gen.bn.running_mean.clone()
    real = np.random.default_rng(0).normal(size=(4, 400))
    ev = FVDEvaluator(real, n_fake=2, frames=9, device="cpu", batch_size=1, seed=3)
    # The latents are a fixed function of the seed, whatever the global RNG did in between.
    z = ev.latents(gen.z_dim).clone()
    torch.manual_seed(123)
    assert torch.equal(FVDEvaluator(real, 2, 9, seed=3).latents(gen.z_dim), z)

    out = ev.evaluate(gen)  # first 9 of the generator's 10 frames, one clip per batch
    assert set(out) == {"fvd", "kvd", "kvd_stderr", "n"} and out["n"] == 2
    assert np.isfinite(out["fvd"]) and out["fvd"] > 0 and np.isfinite(out["kvd"])
    # Back in train mode; the BatchNorm ran with its running statistics and did not update them.
    assert gen.training and torch.equal(gen.bn.running_mean, running_mean)


def test_bootstrap_interval_and_fvd_alone() -> None:
    torch.manual_seed(1)
    gen = TinyGenerator().train()
    real = np.random.default_rng(1).normal(size=(6, 400))
    ev = FVDEvaluator(real, n_fake=4, frames=9, batch_size=4, n_boot=40)
    out = ev.evaluate(gen)
    assert {"fvd_ci_low", "fvd_ci_high"} <= set(out)
    assert out["fvd_ci_low"] < out["fvd_ci_high"]
    assert ev.fvd(gen) == pytest.approx(out["fvd"], rel=1e-6)  # same latents, same clips


def test_too_few_generated_frames_refused() -> None:
    gen = TinyGenerator(frames=10).train()
    ev = FVDEvaluator(np.zeros((2, 400)), n_fake=2, frames=12, device="cpu")
    with pytest.raises(ValueError, match="10 frames, fewer than the 12"):
        ev.evaluate(gen)
    assert gen.training
    with pytest.raises(ValueError, match="at least 9 frames"):
        FVDEvaluator(np.zeros((2, 400)), n_fake=2, frames=8)


def test_no_tf32_sets_and_restores_precision() -> None:
    from vidgan.fvd.i3d import no_tf32

    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    with no_tf32():
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision) == before


def test_every_generated_batch_is_full_size() -> None:
    """iVGAN's generator normalises with batch statistics, so a clip depends on the batch it is drawn in: a last
    batch of n_fake % batch_size clips would be normalised over fewer. It is drawn as the last full batch."""

    class BatchStatGenerator(TinyGenerator):
        def __init__(self) -> None:
            super().__init__()
            self.sizes: list[int] = []

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            self.sizes.append(z.shape[0])
            h = torch.nn.functional.batch_norm(self.fc(z), None, None, training=True)
            return torch.tanh(h).view(-1, *self.shape)

    gen = BatchStatGenerator()
    ev = FVDEvaluator(np.zeros((4, 400)), n_fake=5, frames=9, device="cpu", batch_size=2, seed=0)
    feats = ev.fake_features(gen)
    assert gen.sizes == [2, 2, 2] and feats.shape == (5, 400)
