"""R1: lambda E[|g|^2] at the real clips.

Mescheder et al. 2018, "Which Training Methods for GANs do actually Converge?"; the weight is lambda, not
gamma / 2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vidgan.loss_variants import GradientPenalty, real_samples

if TYPE_CHECKING:
    import torch

ORDER = 6


def squared(norms: torch.Tensor) -> torch.Tensor:
    """|g|^2 per sample."""
    return norms**2


PENALTY = GradientPenalty("r1", at=real_samples, per_sample=squared)
PRESET = {"penalty": "r1"}
