"""An exponential moving average of the generator's weights (``G_ema`` of StyleGAN2-ADA).

The half-life is counted in generated clips, not in updates, so it means the same at any batch size::

    ema_nimg = ema_kimg * 1000                            # the half-life, in clips
    ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)       # ramp-up: young runs average over a short past
    beta     = 0.5 ** (batch / max(ema_nimg, 1e-8))       # weight of the old average per update
    w_ema    = beta * w_ema + (1 - beta) * w

with ``cur_nimg`` the clips the generator was trained on before this update (``generator_updates * batch``),
so the first update copies the generator (``beta = 0``). Buffers (e.g. batch-norm statistics) are copied,
not averaged. The average is what a run is evaluated and sampled with: a generator's weights oscillate from
update to update (the critic chases them), and the average sits near the middle of the oscillation.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def ema_beta(batch: int, cur_nimg: float, ema_kimg: float, ema_rampup: float | None) -> float:
    """The decay of one update of ``batch`` clips after ``cur_nimg`` clips (StyleGAN2-ADA's formula)."""
    ema_nimg = ema_kimg * 1000.0
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


class GeneratorEMA:
    """A frozen copy of ``generator`` whose parameters follow the generator's as a moving average."""

    def __init__(self, generator: nn.Module, ema_kimg: float, ema_rampup: float | None) -> None:
        self.ema_kimg, self.ema_rampup = ema_kimg, ema_rampup
        self.module = copy.deepcopy(generator).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, generator: nn.Module, batch: int, cur_nimg: float) -> float:
        """Move the average towards ``generator`` after an update of ``batch`` clips; return the beta used."""
        beta = ema_beta(batch, cur_nimg, self.ema_kimg, self.ema_rampup)
        for p_ema, p in zip(self.module.parameters(), generator.parameters(), strict=True):
            p_ema.lerp_(p.detach(), 1.0 - beta)  # beta * ema + (1 - beta) * p; exactly p when beta = 0
        for b_ema, b in zip(self.module.buffers(), generator.buffers(), strict=True):
            b_ema.copy_(b)
        return beta

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state)
