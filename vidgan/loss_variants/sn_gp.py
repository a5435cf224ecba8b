"""Spectral norm on every critic layer + WGAN-GP's lambda E[(|g| - 1)^2] at interpolates.

Miyato et al. 2018 (spectral normalisation) with the penalty of :mod:`vidgan.loss_variants.gp`, as the paper
(Pegg & Gorski) compared them.
"""

ORDER = 1
PRESET = {"spectral_norm": True, "penalty": "gp", "layer_norm": False}
