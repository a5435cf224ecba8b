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
    ev = FVDEvaluator(np.zeros((2, 400)), n_fake=3, frames=9, device="cpu", batch_size=2, seed=0)
    fake = ev.fake_features(gen)  # first 9 of the generator's 10 frames
    assert fake.shape == (3, 400) and fake.dtype == np.float64 and gen.training
    running_mean = gen.bn.running_mean.clone()

    # Scored against its own features: the same seeded latents give the same clips, so FVD ~ 0.
    ev.real_feats = fake
    out = ev.evaluate(gen)
    assert set(out) == {"fvd", "kvd", "kvd_stderr", "n"} and out["n"] == 3
    assert abs(out["fvd"]) < 1e-6
    assert gen.training and torch.equal(gen.bn.running_mean, running_mean)


def test_too_few_generated_frames_refused() -> None:
    gen = TinyGenerator(frames=10).train()
    ev = FVDEvaluator(np.zeros((2, 400)), n_fake=2, frames=12, device="cpu")
    with pytest.raises(ValueError, match="10 frames, fewer than the 12"):
        ev.evaluate(gen)
    assert gen.training
    with pytest.raises(ValueError, match="at least 9 frames"):
        FVDEvaluator(np.zeros((2, 400)), n_fake=2, frames=8)
