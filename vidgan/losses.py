"""Critic penalties of the WGAN variants, on the per-sample gradient norm over all C*T*H*W elements.

Each penalty kind (where the gradient is taken, what of its norm is averaged) is defined by its variant's
module in :mod:`vidgan.loss_variants`; this module takes the gradient and applies the kind.
The paper's public code took the norm over the colour channels only (``dim=1`` of ``[B, 3, T, H, W]``)
and averaged over pixels, which changes what every penalty means; the tests pin the formulas
with analytic critics so that mistake cannot come back.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vidgan.loss_variants import GradientPenalty, interpolate, penalties
from vidgan.variants import Variant

__all__ = ["drift_penalty", "gradient_penalty", "input_gradient_norm", "interpolate", "penalty_from_norms"]


def _kind(variant: Variant) -> GradientPenalty:
    kind = penalties().get(variant.penalty)
    if kind is None:
        raise ValueError(f"variant {variant.name!r} has no gradient penalty")
    return kind


def input_gradient_norm(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm of d(scores)/d(inputs), flattened over every non-batch dimension.

    ``scores`` [B] must come from ``inputs`` [B, ...] (``inputs.requires_grad``); the graph is kept so
    the penalty can be differentiated with respect to the critic's parameters.
    """
    (grad,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    return grad.float().flatten(1).norm(2, dim=1)


def penalty_from_norms(norms: torch.Tensor, variant: Variant) -> torch.Tensor:
    """lambda * E[f(|g|)] for the variant's penalty, from per-sample gradient norms."""
    return variant.penalty_weight * _kind(variant).per_sample(norms).mean()


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    variant: Variant,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(penalty, per-sample gradient norms) of a variant; norms and penalty are computed in fp32.

    At the points of the variant's penalty kind (its module's ``at``): interpolates between real and fake for
    gp / one_sided / zero_centered, the real samples for r1.
    ``autocast_dtype`` (the trainer passes bf16 on CUDA with ``bf16``) runs the critic's pass at those
    points, and so the double backward through it, under autocast: the points stay fp32 leaves, their
    gradient arrives in fp32, and its per-sample norms and the penalty accumulate in fp32. ``None``: no
    autocast, fp32 throughout (the CPU path, unchanged).
    """
    point = _kind(variant).at(real, fake, generator)
    point = point.detach().float().requires_grad_(True)
    if autocast_dtype is None:
        scores = critic(point)
    else:
        with torch.autocast(point.device.type, dtype=autocast_dtype):
            scores = critic(point)
    norms = input_gradient_norm(scores.float(), point)
    return penalty_from_norms(norms, variant), norms.detach()


def drift_penalty(real_scores: torch.Tensor, variant: Variant) -> torch.Tensor:
    """epsilon * E[D(x_real)^2] (Karras et al.); zero when the variant has no drift term."""
    return variant.drift_weight * (real_scores.float() ** 2).mean()
