"""WGAN-GP + the drift term epsilon E[D(x_real)^2], epsilon = 1e-4.

Karras et al. 2018, "Progressive Growing of GANs": keeps the critic's output near zero.
"""

ORDER = 5
PRESET = {"penalty": "gp", "drift_weight": 1e-4}
