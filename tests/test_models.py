"""iVGAN shapes, initialisation and normalisation, faithful to the original iVGAN."""

from __future__ import annotations

import math

import pytest
import torch

from vidgan.config import ModelConfig
from vidgan.models import Critic, Generator, SameConv3d


@pytest.mark.parametrize("head", ["ivgan", "linear"])
@pytest.mark.parametrize(("frames", "size"), [(16, 32), (32, 64), (16, 128), (32, 32)])
def test_shapes(frames: int, size: int, head: str) -> None:
    cfg = ModelConfig(frames=frames, size=size, width=2, z_dim=8, critic_head=head)
    gen, critic = Generator(cfg), Critic(cfg)
    video = gen(torch.randn(3, 8))
    assert video.shape == (3, 3, frames, size, size)
    assert critic(video).shape == (3,)
    tanh = Generator(cfg.model_copy(update={"output": "tanh"}))(torch.randn(3, 8))
    assert tanh.min() >= -1 and tanh.max() <= 1


def test_paper_config_parameter_count() -> None:
    gen = Generator(ModelConfig(edges="zero"))  # the paper's kernel-4 transposed convolutions
    assert sum(p.numel() for p in gen.parameters()) == pytest.approx(12.7e6, rel=0.01)
    critic = Critic(ModelConfig(critic_head="ivgan"))
    # the critic's final conv gives [1, 2, 2] -> Linear(4, 1), as in the original
    assert critic.head.in_features == 4
    # the linear head reads the fourth block's 512 (+1 minibatch-std) channels at 2 x 4 x 4
    assert Critic(ModelConfig(critic_head="linear", minibatch_std=4)).head.in_features == 513 * 32


def test_ivgan_critic_head_starts_far_below_the_penalty_target_and_the_linear_one_near_it() -> None:
    """At initialisation iVGAN's head (1-channel conv, LeakyReLU, Linear(1, 1) from N(0, 0.01^2)) gives an input
    gradient of norm ~1e-3, which a gradient penalty (target 1) must first grow ~1000x; the linear head starts
    within an order of magnitude of 1 (squares' shape, width 16, as benchmarks/convergence.py trains)."""
    from vidgan.losses import input_gradient_norm

    torch.manual_seed(0)
    x = (torch.rand(8, 3, 16, 32, 32) * 2 - 1).requires_grad_(True)
    norms = {}
    for head in ("ivgan", "linear"):
        critic = Critic(ModelConfig(frames=16, size=32, width=16, critic_head=head, minibatch_std=0))
        norms[head] = input_gradient_norm(critic(x), x).mean().item()
    assert norms["ivgan"] < 0.01 and 0.1 < norms["linear"] < 10, norms


def test_original_initialisation_has_the_square_root() -> None:
    torch.manual_seed(0)
    conv = SameConv3d(64, 128)
    bound = math.sqrt(3) * math.sqrt(4 / (64 * 64 + 128 * 64 / 8))
    assert conv.weight.abs().max().item() == pytest.approx(bound, rel=0.01)
    assert torch.all(conv.bias == 0)


def test_critic_layer_norm_is_per_channel_and_size_independent() -> None:
    cfg = ModelConfig(frames=16, size=32, width=4, z_dim=8, minibatch_std=0)  # MinibatchStd couples a group
    critic = Critic(cfg)
    norms = [m for m in critic.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert [n.weight.numel() for n in norms] == [4, 8, 16, 32]  # one scale per channel, not per element
    # a sample's score does not depend on the other samples in the batch (no batch norm in the critic)
    x = torch.randn(4, 3, 16, 32, 32)
    assert torch.allclose(critic(x)[:2], critic(x[:2]), atol=1e-5)


def test_spectral_norm_wraps_every_critic_layer() -> None:
    for head, n_layers in (("ivgan", 6), ("linear", 5)):  # five convs or four, and the linear head
        critic = Critic(ModelConfig(frames=16, size=32, width=4, critic_head=head), spectral_norm=True,
                        layer_norm=False)
        layers = [m for m in critic.modules() if isinstance(m, torch.nn.Conv3d | torch.nn.Linear)]
        assert len(layers) == n_layers
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


def test_replicate_edges_give_every_output_the_same_number_of_taps() -> None:
    """A constant input through a deconvolution of ones: with zero edges (padding 1, iVGAN's) the first and last
    frame and the border pixels sum half the taps of the others along each axis; with replicated edges all alike."""
    from vidgan.models import EdgeDeconv3d

    x = torch.ones(1, 1, 4, 4, 4)
    zero = torch.nn.ConvTranspose3d(1, 1, 4, 2, padding=1, bias=False)
    edge = EdgeDeconv3d(1, 1)
    for conv in (zero, edge):
        torch.nn.init.ones_(conv.weight)
        if conv.bias is not None:
            torch.nn.init.zeros_(conv.bias)
    with torch.no_grad():
        y_zero, y_edge = zero(x)[0, 0], edge(x)[0, 0]
    assert y_zero.shape == y_edge.shape == (8, 8, 8)
    assert y_zero[1:-1, 1:-1, 1:-1].unique().tolist() == [8.0] and y_zero[0, 0, 0] == 1.0 and y_zero[0, 4, 4] == 4.0
    assert y_edge.unique().tolist() == [8.0]
    # same parameters either way, so a checkpoint loads into both
    assert {k: v.shape for k, v in edge.state_dict().items()} == {
        k: v.shape for k, v in torch.nn.ConvTranspose3d(1, 1, 4, 2, padding=1).state_dict().items()}


@pytest.mark.parametrize("edges", ["replicate", "zero"])
def test_subpixel_deconvolution_is_the_transposed_convolution(edges: str) -> None:
    """The CPU path (one kernel-2 conv3d + a pixel shuffle) gives PyTorch's transposed convolution's outputs and
    gradients exactly, at odd sizes and a size of 1 too: only the arithmetic's order differs (float64 here)."""
    import torch.nn.functional as F

    from vidgan.models import subpixel_deconv3d

    torch.manual_seed(0)
    for c_in, c_out, size in [(5, 3, (1, 2, 3)), (4, 6, (3, 4, 4)), (2, 2, (2, 5, 1))]:
        x = torch.randn(2, c_in, *size, dtype=torch.float64, requires_grad=True)
        w = torch.randn(c_in, c_out, 4, 4, 4, dtype=torch.float64, requires_grad=True)
        b = torch.randn(c_out, dtype=torch.float64, requires_grad=True)
        if edges == "zero":
            ref = F.conv_transpose3d(x, w, b, stride=2, padding=1)
        else:
            ref = F.conv_transpose3d(F.pad(x, (1,) * 6, mode="replicate"), w, b, stride=2)[:, :, 3:-3, 3:-3, 3:-3]
        out = subpixel_deconv3d(x, w, b, edges)
        assert out.shape == ref.shape == (2, c_out, *(2 * n for n in size))
        assert torch.allclose(out, ref, atol=1e-12)
        g = torch.randn_like(ref)
        grads_ref = torch.autograd.grad(ref, (x, w, b), g)
        grads_out = torch.autograd.grad(out, (x, w, b), g)
        for a, r in zip(grads_out, grads_ref, strict=True):
            assert torch.allclose(a, r, atol=1e-10)


def test_subpixel_resize_convolution_is_nearest_upsampling_then_the_convolution() -> None:
    """The CPU path of ``edges: resize`` (one kernel-2 conv3d + a pixel shuffle) gives nearest doubling followed by
    the 3x3x3 convolution over replicated edges exactly, outputs and gradients, at odd sizes and a size of 1 too;
    a generator with resize edges samples the same clips either way."""
    import torch.nn.functional as F

    from vidgan import models
    from vidgan.models import Generator, ResizeConv3d, subpixel_resize_conv3d

    torch.manual_seed(0)
    for c_in, c_out, size in [(5, 3, (1, 2, 3)), (4, 6, (3, 4, 4)), (2, 2, (2, 5, 1))]:
        x = torch.randn(2, c_in, *size, dtype=torch.float64, requires_grad=True)
        layer = ResizeConv3d(c_in, c_out).double()
        w, b = layer.conv.weight, layer.conv.bias
        torch.nn.init.normal_(b)
        ref = layer.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # padding_mode="replicate"
        out = subpixel_resize_conv3d(x, w, b)
        assert out.shape == ref.shape == (2, c_out, *(2 * n for n in size))
        assert torch.allclose(out, ref, atol=1e-12)
        assert torch.equal(layer(x), out)  # the module takes this path on the CPU
        g = torch.randn_like(ref)
        for a, r in zip(torch.autograd.grad(out, (x, w, b), g), torch.autograd.grad(ref, (x, w, b), g), strict=True):
            assert torch.allclose(a, r, atol=1e-10)

    gen = Generator(ModelConfig(frames=16, size=32, width=4, z_dim=8, edges="resize")).double()
    z = torch.randn(3, 8, dtype=torch.float64)
    fast = gen(z)
    plain = models.subpixel_resize_conv3d
    try:
        models.subpixel_resize_conv3d = models.upsample_conv3d  # PyTorch's own ops, as off the CPU
        slow = gen(z)
    finally:
        models.subpixel_resize_conv3d = plain
    assert fast.shape == (3, 3, 16, 32, 32) and torch.allclose(fast, slow, atol=1e-12)


def test_generator_edge_frames_start_like_the_others() -> None:
    """At initialisation the first and last frames of a zero-edged generator have about a third of the spread of
    the middle ones (the first frame 'darker and blurrier'); with replicated edges they match."""
    torch.manual_seed(0)
    z = torch.randn(32, 16)
    spreads = {}
    for edges in ("zero", "replicate"):
        gen = Generator(ModelConfig(frames=16, size=32, width=8, z_dim=16, edges=edges, output="tanh"))
        with torch.no_grad():
            x = torch.relu(gen.bn0(gen.fc(z).view(-1, gen.top, gen.t0, gen.s0, gen.s0)))
            pre = gen.net[:-1](x)  # before tanh
        sd = pre.std(dim=(0, 1, 3, 4))
        spreads[edges] = (sd[[0, -1]].mean() / sd[4:12].mean()).item()
    assert spreads["zero"] < 0.5 and spreads["replicate"] > 0.8


def test_layer_norm_makes_the_critic_blind_to_scale() -> None:
    """With layer norm and zero biases (as initialised) the critic scores a clip and the clip scaled by any a > 0
    alike; without it the score scales with a (LeakyReLU and zero-bias convs are positively homogeneous; iVGAN's
    head, whose bias starts at zero)."""
    cfg = ModelConfig(frames=16, size=32, width=4, z_dim=8, critic_head="ivgan")
    x = torch.rand(3, 3, 16, 32, 32) * 2 - 1
    torch.manual_seed(0)
    with torch.no_grad():
        ln = Critic(cfg, layer_norm=True)
        assert torch.allclose(ln(0.1 * x), ln(x), rtol=1e-3, atol=1e-7)
        plain = Critic(cfg, layer_norm=False)
        assert torch.allclose(plain(0.1 * x), 0.1 * plain(x), rtol=1e-4, atol=1e-9)


def test_minibatch_std_sees_collapse_within_groups_only() -> None:
    from vidgan.models import MinibatchStd

    layer = MinibatchStd(4)
    x = torch.randn(8, 5, 1, 2, 2)
    x[4:] = x[4]  # the second group of four: one sample repeated (a collapsed generator)
    y = layer(x)
    assert y.shape == (8, 6, 1, 2, 2) and torch.equal(y[:, :5], x)
    assert (y[:4, 5] > 0.5).all() and (y[4:, 5] < 1e-3).all()  # groups are consecutive samples, never mixed
    cfg = ModelConfig(frames=16, size=32, width=4, z_dim=8, minibatch_std=4)
    critic = Critic(cfg)
    v = torch.rand(8, 3, 16, 32, 32)
    assert torch.allclose(critic(v)[:4], critic(v[:4]), atol=1e-5)  # a group is scored alone, as the trainer's halves


def test_trainer_never_mixes_reals_and_fakes_in_a_minibatch_std_group() -> None:
    from vidgan.config import TrainConfig
    from vidgan.trainer import Trainer
    from vidgan.variants import get_variant

    cfg = ModelConfig(frames=16, size=32, width=2, z_dim=8, minibatch_std=4)
    assert Trainer(cfg, get_variant("gp"), TrainConfig(batch_size=8)).joint_scoring
    assert not Trainer(cfg, get_variant("gp"), TrainConfig(batch_size=6)).joint_scoring  # groups would straddle
