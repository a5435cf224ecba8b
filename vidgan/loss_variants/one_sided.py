"""WGAN-LP: lambda E[max(0, |g| - 1)^2] at interpolates of real and fake clips.

Petzka et al. 2018, "On the regularization of Wasserstein GANs": only gradients steeper than 1 are penalised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vidgan.loss_variants import GradientPenalty, interpolate

if TYPE_CHECKING:
    import torch

ORDER = 4


def one_sided(norms: torch.Tensor) -> torch.Tensor:
    """max(0, |g| - 1)^2 per sample."""
    import torch

    return torch.clamp(norms - 1.0, min=0.0) ** 2


PENALTY = GradientPenalty("one_sided", at=interpolate, per_sample=one_sided)
PRESET = {"penalty": "one_sided"}
