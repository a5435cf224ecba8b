"""The penalty formulas, pinned exactly with critics whose input gradient is known in closed form.

|g| is the per-sample L2 norm over all C*T*H*W elements. The paper's code took the norm over the colour
channels per pixel and averaged over pixels; ``per_channel_norms`` below is that mistake, and every test
checks that it would give a different number, so these tests would catch it.
"""

from __future__ import annotations

import pytest
import torch

from vidgan.config import ModelConfig
from vidgan.losses import drift_penalty, gradient_penalty, interpolate, penalty_from_norms
from vidgan.models import Critic
from vidgan.variants import PRESETS, Variant, get_variant

SHAPE = (3, 3, 4, 5, 5)  # [B, C, T, H, W]
LAM = 10.0


def per_channel_norms(grad: torch.Tensor) -> torch.Tensor:
    """The paper code's mistake: norm over dim=1 (colour) per pixel, averaged over pixels."""
    return grad.norm(2, dim=1).flatten(1).mean(1)


class LinearCritic(torch.nn.Module):
    """D(x) = <w, x>: gradient w for every input."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(1)


class QuadraticCritic(torch.nn.Module):
    """D(x) = c/2 * |x|^2: gradient c * x, different for every sample."""

    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.c * (x**2).flatten(1).sum(1)


def _w_with_norm(norm: float) -> torch.Tensor:
    w = torch.randn(SHAPE[1:], generator=torch.Generator().manual_seed(0))
    return w / w.norm() * norm


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)


@pytest.mark.parametrize(
    ("penalty", "norm", "expected"),
    [
        ("gp", 2.5, LAM * (2.5 - 1) ** 2),
        ("gp", 0.5, LAM * (0.5 - 1) ** 2),
        ("one_sided", 2.5, LAM * (2.5 - 1) ** 2),
        ("one_sided", 0.5, 0.0),
        ("zero_centered", 0.5, LAM * 0.5**2),
        ("zero_centered", 2.5, LAM * 2.5**2),
        ("r1", 2.5, LAM * 2.5**2),
    ],
)
def test_linear_critic_penalties_are_exact(penalty: str, norm: float, expected: float) -> None:
    real, fake = _data()
    w = _w_with_norm(norm)
    variant = Variant(name=penalty, penalty=penalty, penalty_weight=LAM)
    value, norms = gradient_penalty(LinearCritic(w), real, fake, variant)
    assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert torch.allclose(norms, torch.full((SHAPE[0],), norm), rtol=1e-5)
    # The per-channel norm of the paper's code gives another number for the same critic.
    wrong = per_channel_norms(w.expand(SHAPE)).mean().item()
    assert abs(wrong - norm) > 0.1


@pytest.mark.parametrize("penalty", ["gp", "one_sided", "zero_centered"])
def test_sample_dependent_gradient_at_interpolates(penalty: str) -> None:
    real, fake = _data()
    c = 0.7
    variant = Variant(name=penalty, penalty=penalty, penalty_weight=LAM)
    value, norms = gradient_penalty(QuadraticCritic(c), real, fake, variant, torch.Generator().manual_seed(5))

    # Same alphas as the implementation draws: one per sample.
    x_hat = interpolate(real, fake, torch.Generator().manual_seed(5))
    per_sample = c * x_hat.flatten(1).norm(dim=1)
    assert per_sample.std() > 0.1  # the gradient norm really differs between samples
    f = {
        "gp": lambda n: (n - 1) ** 2,
        "one_sided": lambda n: torch.clamp(n - 1, min=0) ** 2,
        "zero_centered": lambda n: n**2,
    }[penalty]
    assert torch.allclose(norms, per_sample, rtol=1e-5)
    assert value.item() == pytest.approx(LAM * f(per_sample).mean().item(), rel=1e-5)
    wrong = LAM * f(per_channel_norms(c * x_hat)).mean().item()
    assert abs(wrong - value.item()) > 1e-2 * abs(value.item())


def test_r1_is_taken_at_real_samples() -> None:
    real, fake = _data()
    c = 0.3
    value, norms = gradient_penalty(QuadraticCritic(c), real, fake, get_variant("r1"))
    expected_norms = c * real.flatten(1).norm(dim=1)
    assert torch.allclose(norms, expected_norms, rtol=1e-5)
    assert value.item() == pytest.approx(LAM * (expected_norms**2).mean().item(), rel=1e-5)


def test_interpolates_use_one_alpha_per_sample() -> None:
    real, fake = torch.zeros(SHAPE), torch.ones(SHAPE)
    x_hat = interpolate(real, fake, torch.Generator().manual_seed(0))
    for sample in x_hat:
        assert torch.all(sample == sample.flatten()[0])  # constant within a sample
    assert len({round(s.flatten()[0].item(), 6) for s in x_hat}) == SHAPE[0]


def test_penalty_is_differentiable_wrt_critic_parameters() -> None:
    real, fake = _data()
    critic = LinearCritic(_w_with_norm(2.0))
    value, _ = gradient_penalty(critic, real, fake, get_variant("gp"))
    value.backward()
    # d/dw lambda (|w| - 1)^2 = 2 lambda (|w| - 1) w / |w|
    w = critic.w.detach()
    assert torch.allclose(critic.w.grad, 2 * LAM * (w.norm() - 1) * w / w.norm(), rtol=1e-4)


def test_drift_penalty() -> None:
    scores = torch.tensor([1.0, -2.0, 3.0])
    assert drift_penalty(scores, get_variant("drift")).item() == pytest.approx(1e-4 * (1 + 4 + 9) / 3)
    assert drift_penalty(scores, get_variant("gp")).item() == 0.0


def test_presets_match_the_paper() -> None:
    assert PRESETS["gp"].penalty == "gp" and not PRESETS["gp"].spectral_norm
    assert PRESETS["sn_gp"].spectral_norm and PRESETS["sn_gp"].penalty == "gp"
    assert not any(v.layer_norm for v in PRESETS.values())  # the paper's layer norms: tune_jobs/paper.yaml
    assert PRESETS["sn"].spectral_norm and PRESETS["sn"].penalty == "none"
    assert PRESETS["zero_gp"].penalty == "zero_centered"
    assert PRESETS["one_sided"].penalty == "one_sided"
    assert PRESETS["drift"].penalty == "gp" and PRESETS["drift"].drift_weight == 1e-4
    assert PRESETS["r1"].penalty == "r1"
    assert all(v.penalty_weight == 10.0 for v in PRESETS.values())


def test_bad_variants_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        get_variant("wgan-clip")
    with pytest.raises(ValueError, match="unconstrained"):
        Variant(name="x", penalty="none", spectral_norm=False)
    with pytest.raises(ValueError):
        Variant(name="x", penalty="gp", penalty_weight=-1)
    with pytest.raises(ValueError):
        Variant(name="x", penalty="gradient")
    with pytest.raises(ValueError):
        get_variant("gp", lambda_=3)


# ------------------------------------------------------------------ the penalty pass in bf16 (issue #10)
def _reference_gradient_penalty(critic, real, fake, variant, generator):  # noqa: ANN001, ANN202
    """gradient_penalty as it was before the autocast option, spelled out."""
    point = real if variant.penalty == "r1" else interpolate(real, fake, generator)
    point = point.detach().float().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(point).float().sum(), point, create_graph=True)
    norms = grad.float().flatten(1).norm(2, dim=1)
    return penalty_from_norms(norms, variant), norms.detach()


def _tiny_critic(variant: Variant, seed: int) -> tuple[Critic, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    critic = Critic(ModelConfig(frames=16, size=32, width=4, z_dim=8), spectral_norm=variant.spectral_norm,
                    layer_norm=variant.layer_norm).eval()  # eval: spectral norm's power iteration stays put
    g = torch.Generator().manual_seed(seed)
    return critic, torch.rand(4, 3, 16, 32, 32, generator=g) * 2 - 1, torch.rand(4, 3, 16, 32, 32, generator=g) * 2 - 1


def _penalty_and_grads(critic, real, fake, variant, dtype, device, scale=1.0):  # noqa: ANN001, ANN202
    critic.zero_grad(set_to_none=True)
    value, norms = gradient_penalty(lambda x: critic(x) * scale, real.to(device), fake.to(device), variant,
                                    torch.Generator(device=device).manual_seed(1), autocast_dtype=dtype)
    value.backward()
    grads = torch.cat([p.grad.flatten() for p in critic.parameters() if p.grad is not None])
    return value.detach(), norms, grads


@pytest.mark.parametrize("name", ["gp", "sn_gp", "r1"])
def test_penalty_without_autocast_is_unchanged(name: str) -> None:
    """The path every CPU run takes (no autocast) gives bit-identical penalty, norms and critic gradients."""
    variant = get_variant(name)
    critic, real, fake = _tiny_critic(variant, 0)
    value, norms, grads = _penalty_and_grads(critic, real, fake, variant, None, "cpu")
    critic.zero_grad(set_to_none=True)
    ref_value, ref_norms = _reference_gradient_penalty(critic, real, fake, variant, torch.Generator().manual_seed(1))
    ref_value.backward()
    ref_grads = torch.cat([p.grad.flatten() for p in critic.parameters() if p.grad is not None])
    assert torch.equal(value, ref_value.detach()) and torch.equal(norms, ref_norms) and torch.equal(grads, ref_grads)


# Stated tolerance of the bf16 critic pass against fp32 (relative; critic scaled so |grad| ~ 1.5, where the
# penalty is sensitive to its norms). Layer-norm critics: 5% (2.4x the worst seen on CPU: norms 0.8%,
# penalty 1.3%, gradients 1.1%). sn_gp has no layer norm and spectral norm's sigma is also computed in bf16
# under autocast (as in the critic's main pass): 20% (worst seen on CPU: penalty 6.7%, gradients 9.4%).
BF16_TOLERANCE = {"gp": 0.05, "r1": 0.05, "one_sided": 0.05, "sn_gp": 0.2}


def _check_bf16_penalty(name: str, device: str) -> None:
    variant = get_variant(name)
    tol = BF16_TOLERANCE[name]
    for seed in (0, 1):
        critic, real, fake = _tiny_critic(variant, seed)
        critic.to(device)
        _, n0, _ = _penalty_and_grads(critic, real, fake, variant, None, device)
        scale = 1.5 / n0.mean().item()
        v32, n32, g32 = _penalty_and_grads(critic, real, fake, variant, None, device, scale)
        v16, n16, g16 = _penalty_and_grads(critic, real, fake, variant, torch.bfloat16, device, scale)
        assert v16.dtype == n16.dtype == g16.dtype == torch.float32  # norms, penalty and gradients stay fp32
        assert torch.allclose(n16, n32, rtol=tol, atol=0), (n16, n32)
        assert abs(v16 - v32).item() <= tol * abs(v32).item(), (v16, v32)
        assert ((g16 - g32).norm() / g32.norm()).item() <= tol
        assert torch.nn.functional.cosine_similarity(g16, g32, dim=0).item() >= 1 - tol / 10


@pytest.mark.parametrize("name", ["gp", "sn_gp"])
def test_bf16_penalty_matches_fp32_cpu_autocast(name: str) -> None:
    """The same check with CPU autocast (the trainer uses bf16 only on CUDA; this runs without a GPU)."""
    _check_bf16_penalty(name, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(BF16_TOLERANCE))
def test_bf16_penalty_matches_fp32_cuda(name: str) -> None:
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # against true fp32
    try:
        _check_bf16_penalty(name, "cuda")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
