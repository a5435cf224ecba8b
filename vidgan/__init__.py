"""vidgan: iVGAN and WGAN loss variants for video, trained and compared with Ray Tune, scored by FVD."""

__version__ = "0.1.0"
