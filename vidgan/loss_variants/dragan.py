"""DRAGAN: lambda E[(|g| - 1)^2] at perturbed real clips x_real + 0.5 std(x_real) U[0, 1).

Kodali et al. 2017, "On Convergence and Stability of GANs" (arXiv:1705.07215): the critic is kept smooth
around the real data instead of along lines from real to fake clips. The paper states the penalty with
noise delta ~ N(0, cI) and k = 1; we take the perturbation of the authors' public code and of the common
re-implementations, delta = 0.5 * std(x_real) * u with u ~ U[0, 1) drawn per element and std over the whole
real batch. That code also moves a random fraction alpha ~ U[0, 1) per sample along delta; we do not (the
points are x_real + delta, as in the paper's formula). The fake clips are not used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vidgan.loss_variants import GradientPenalty

if TYPE_CHECKING:
    import torch


def perturbed_real(real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """x_real + 0.5 * std(x_real) * u, u ~ U[0, 1) per element (std over the batch, one number)."""
    import torch

    noise = torch.rand(real.shape, device=real.device, generator=generator, dtype=real.dtype)
    return real + 0.5 * real.std() * noise


def two_sided(norms: torch.Tensor) -> torch.Tensor:
    """(|g| - 1)^2 per sample, as WGAN-GP."""
    return (norms - 1.0) ** 2


PENALTY = GradientPenalty("dragan", at=perturbed_real, per_sample=two_sided)
PRESET = {"penalty": "dragan"}
