"""iVGAN shapes, initialisation and normalisation, faithful to the original iVGAN."""

from __future__ import annotations

import math

import pytest
import torch

from vidgan.config import ModelConfig
from vidgan.models import Critic, Generator, SameConv3d


@pytest.mark.parametrize(("frames", "size"), [(16, 32), (32, 64), (16, 128), (32, 32)])
def test_shapes(frames: int, size: int) -> None:
    cfg = ModelConfig(frames=frames, size=size, width=2, z_dim=8)
    gen, critic = Generator(cfg), Critic(cfg)
    video = gen(torch.randn(3, 8))
    assert video.shape == (3, 3, frames, size, size)
    assert video.min() >= -1 and video.max() <= 1
    assert critic(video).shape == (3,)


def test_paper_config_parameter_count() -> None:
    gen = Generator(ModelConfig())
    assert sum(p.numel() for p in gen.parameters()) == pytest.approx(12.7e6, rel=0.01)
    critic = Critic(ModelConfig())
    # the critic's final conv gives [1, 2, 2] -> Linear(4, 1), as in the original
    assert critic.head.in_features == 4


def test_original_initialisation_has_the_square_root() -> None:
    torch.manual_seed(0)
    conv = SameConv3d(64, 128)
    bound = math.sqrt(3) * math.sqrt(4 / (64 * 64 + 128 * 64 / 8))
    assert conv.weight.abs().max().item() == pytest.approx(bound, rel=0.01)
    assert torch.all(conv.bias == 0)


def test_critic_layer_norm_is_per_channel_and_size_independent() -> None:
    cfg = ModelConfig(frames=16, size=32, width=4, z_dim=8)
    critic = Critic(cfg)
    norms = [m for m in critic.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert [n.weight.numel() for n in norms] == [4, 8, 16, 32]  # one scale per channel, not per element
    # a sample's score does not depend on the other samples in the batch (no batch norm in the critic)
    x = torch.randn(4, 3, 16, 32, 32)
    assert torch.allclose(critic(x)[:2], critic(x[:2]), atol=1e-5)


def test_spectral_norm_wraps_every_critic_layer() -> None:
    critic = Critic(ModelConfig(frames=16, size=32, width=4), spectral_norm=True, layer_norm=False)
    layers = [m for m in critic.modules() if isinstance(m, torch.nn.Conv3d | torch.nn.Linear)]
    assert len(layers) == 6  # five convs and the linear head
    assert all(hasattr(m, "parametrizations") and "weight" in m.parametrizations for m in layers)
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in critic.modules())


def test_generator_batch_norm_has_shift_but_no_scale() -> None:
    gen = Generator(ModelConfig(frames=16, size=32, width=4, z_dim=8))
    names = [n for n, _ in gen.named_parameters()]
    assert not any("weight" in n and "bn" in n for n in names)
    assert "bn0.bias" in names
    # batch statistics in eval mode too, as the original sampled
    z = torch.randn(4, 8)
    assert torch.allclose(gen.train()(z), gen.eval()(z))
