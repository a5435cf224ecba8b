"""DRAGAN (vidgan/loss_variants/dragan.py), a variant added as one module: its penalty pinned with analytic
critics, the points it takes the gradient at, and a training step and a sweep spec that name it."""

from __future__ import annotations

import pytest
import torch

from vidgan.config import ModelConfig, TrainConfig
from vidgan.losses import gradient_penalty
from vidgan.variants import PRESETS, get_variant

SHAPE = (4, 3, 4, 5, 5)  # [B, C, T, H, W]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)


class QuadraticCritic(torch.nn.Module):
    """D(x) = c/2 |x|^2: gradient c x, so the norm says where the gradient was taken."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.c * (x**2).flatten(1).sum(1)


def test_the_preset_is_registered() -> None:
    dragan = PRESETS["dragan"]
    assert dragan.penalty == "dragan" and dragan.penalty_weight == 10.0 and not dragan.spectral_norm
    assert dragan.has_penalty and not dragan.has_drift


def test_penalty_at_perturbed_real_samples_is_exact() -> None:
    real, fake = _data()
    c = 0.6
    value, norms = gradient_penalty(QuadraticCritic(c), real, fake, get_variant("dragan"),
                                    torch.Generator().manual_seed(5))
    u = torch.rand(SHAPE, generator=torch.Generator().manual_seed(5))  # the draw the penalty makes
    x_hat = real + 0.5 * real.std() * u
    expected = c * x_hat.flatten(1).norm(dim=1)
    assert torch.allclose(norms, expected, rtol=1e-5)
    assert value.item() == pytest.approx(10.0 * ((expected - 1) ** 2).mean().item(), rel=1e-5)
    # not at the real samples themselves (R1's points), and not between real and fake (WGAN-GP's)
    assert not torch.allclose(norms, c * real.flatten(1).norm(dim=1), rtol=1e-3)
    again, _ = gradient_penalty(QuadraticCritic(c), real, fake * 5, get_variant("dragan"),
                                torch.Generator().manual_seed(5))
    assert torch.equal(again, value)  # the fake clips play no part


def test_perturbation_lies_within_half_a_standard_deviation_above_the_real_clips() -> None:
    from vidgan.loss_variants.dragan import perturbed_real

    real = torch.randn(8, 3, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    points = perturbed_real(real, real, torch.Generator().manual_seed(1))
    delta = points - real
    assert float(delta.min()) >= 0 and float(delta.max()) < 0.5 * float(real.std())
    assert float(delta.max()) > 0.45 * float(real.std())  # the whole range is drawn


def test_a_trainer_and_a_sweep_spec_take_it() -> None:
    from tune_jobs.spec import parse_spec
    from vidgan.synthetic import synthetic_batches
    from vidgan.trainer import Trainer

    tiny = ModelConfig(frames=16, size=32, width=4, z_dim=8)
    trainer = Trainer(tiny, get_variant("dragan"), TrainConfig(batch_size=2, n_critic=1, seed=0))
    metrics = trainer.train_iteration(synthetic_batches(tiny, 2))
    assert metrics["penalty"] > 0 and all(v == v for v in metrics.values())
    spec = parse_spec({"name": "d", "datasets": [{"name": "x", "path": "/nowhere"}], "variants": ["gp", "dragan"],
                       "overrides": {"dragan": {"penalty_weight": 5}}, "eval": {"every": 1, "n_real": 2, "n_fake": 2},
                       "scheduler": {"max_t": 2}})
    assert spec.variant("dragan").penalty_weight == 5.0
