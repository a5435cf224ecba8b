"""Spectral norm on every critic layer, no gradient penalty.

Miyato et al. 2018, "Spectral Normalization for Generative Adversarial Networks".
"""

ORDER = 2
PRESET = {"spectral_norm": True, "penalty": "none"}
