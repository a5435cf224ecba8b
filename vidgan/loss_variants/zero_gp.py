"""0-GP: lambda E[|g|^2] at interpolates of real and fake clips.

Thanh-Tung et al. 2019, "Improving Generalization and Stability of Generative Adversarial Networks": the
zero-centred penalty, at the interpolates of WGAN-GP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vidgan.loss_variants import GradientPenalty, interpolate

if TYPE_CHECKING:
    import torch

ORDER = 3


def squared(norms: torch.Tensor) -> torch.Tensor:
    """|g|^2 per sample."""
    return norms**2


PENALTY = GradientPenalty("zero_centered", at=interpolate, per_sample=squared)
PRESET = {"penalty": "zero_centered"}
