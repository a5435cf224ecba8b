"""WGAN-GP: lambda E[(|g| - 1)^2] at interpolates of real and fake clips.

Gulrajani et al. 2017, "Improved Training of Wasserstein GANs": one alpha ~ U[0, 1) per sample,
x_hat = alpha x_real + (1 - alpha) x_fake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vidgan.loss_variants import GradientPenalty, interpolate

if TYPE_CHECKING:
    import torch

ORDER = 0


def two_sided(norms: torch.Tensor) -> torch.Tensor:
    """(|g| - 1)^2 per sample."""
    return (norms - 1.0) ** 2


PENALTY = GradientPenalty("gp", at=interpolate, per_sample=two_sided)
PRESET = {"penalty": "gp"}
