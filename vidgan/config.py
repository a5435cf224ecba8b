"""Configuration as data: the model shape and the optimisation schedule, validated up front.

Loss variants live in :mod:`vidgan.variants`. Every config is a frozen pydantic model that refuses
unknown keys, so a typo in a sweep spec is an error, not a silently ignored setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Config):
    """Shape of the iVGAN generator and critic.

    The paper's setting is the default: 64x64 pixels, 32 frames, critic widths 64 -> 512 (the generator
    mirrors them, 512 -> 64), z of dimension 100. ``width`` is the base width: the critic's first conv has
    ``width`` channels and every later one doubles it.
    """

    frames: Literal[16, 32] = 32
    size: Literal[32, 64, 128] = 64
    width: int = Field(64, ge=1, le=1024)
    z_dim: int = Field(100, ge=1, le=4096)
    # how the generator upsamples (vidgan.models): "resize" (the default) doubles by nearest neighbour, then a 3x3x3
    # conv: no checkerboard and no edge effect (Odena et al. 2016); "replicate", a kernel-4 stride-2 transposed conv
    # that gives the first and last frame (and the border pixels) as many kernel taps as the others; "zero", iVGAN's
    # and the paper's padding 1, under which they start with a third of the others' spread
    edges: Literal["replicate", "zero", "resize"] = "resize"
    # the generator's last activation: "tanh" (iVGAN) squashes into [-1, 1] and, once pushed far past a value the
    # data holds (a black background), passes almost no gradient back; "linear" leaves the range to the critic
    # (as StyleGAN does; clips are clamped when turned into pixels)
    output: Literal["tanh", "linear"] = "linear"
    # the critic's minibatch standard deviation feature (vidgan.models.MinibatchStd) over groups of this many clips,
    # which lets it see a generator that makes one clip for every latent; 0: none (iVGAN and the paper)
    minibatch_std: int = Field(0, ge=0, le=64)
    # the critic's output: "ivgan" (iVGAN and the paper) convolves its last features down to one channel, applies a
    # LeakyReLU and a Linear(., 1) head drawn from N(0, 0.01^2), so at initialisation its gradient with respect to
    # the clip is ~1e-3 of the norm 1 a gradient penalty asks for; "linear" (DCGAN's, the minimal WGAN-GP's) feeds the
    # last conv block's features straight to a Linear(., 1) head with PyTorch's default initialisation
    critic_head: Literal["ivgan", "linear"] = "linear"


class TrainConfig(_Config):
    """Optimisation schedule. One *iteration* is ``n_critic`` critic updates then one generator update."""

    batch_size: int = Field(64, ge=1)
    n_critic: int = Field(1, ge=1, le=100)
    lr: float = Field(1e-4, gt=0, le=1.0)
    # the critic's learning rate is lr x this (the two time-scale update rule, Heusel et al. 2017); searches and PBT
    # change lr and keep the ratio
    critic_lr_ratio: float = Field(4.0, gt=0, le=100.0)
    betas: tuple[float, float] = (0.5, 0.9)
    seed: int = 0
    bf16: bool = False  # bf16 autocast for the networks on CUDA; penalties stay in fp32
    # Moving average of the generator's weights (vidgan.ema, StyleGAN2-ADA's G_ema): half-life ema_kimg
    # thousand clips, ramped up as ema_rampup x the clips trained on so far. In runs shorter than
    # ema_kimg / ema_rampup thousand clips (200k: every CPU run and the first ~3k iterations at batch 64)
    # the ramp-up rules, and the average spans the last ~5% of training.
    ema: bool = True
    ema_kimg: float = Field(10.0, gt=0)
    ema_rampup: float | None = Field(0.05, gt=0)
    device: str | None = None  # None: CUDA when present, else CPU

    @model_validator(mode="after")
    def _check_betas(self) -> TrainConfig:
        for b in self.betas:
            if not 0.0 <= b < 1.0:
                raise ValueError(f"Adam betas must lie in [0, 1), got {self.betas}")
        return self
