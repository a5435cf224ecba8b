"""iVGAN (Kratzwald et al. 2017): a 3D-convolutional generator and critic for 64x64x32 video.

Faithful to the original TensorFlow iVGAN, not to the PyTorch port the paper used (see
``shared/notes/seed-code.md``):

- z ~ N(0, I) of dimension ``z_dim`` (the port drew U[0, 1)).
- Conv and deconv weights uniform with bound ``sqrt(3) * sqrt(4 / (fan_in + fan_out))``,
  ``fan_in = c_in * k^3``, ``fan_out = c_out * k^3 / 8`` (He et al. for stride 2; the port lost the
  square root), zero biases; linear layers N(0, 0.01^2).
- Generator batch norm as TF-contrib's default: a learned shift (beta) but no scale (gamma), eps 1e-3,
  and, as the original always ran it in training mode, batch statistics both when training and when
  sampling (no running statistics that a short run would leave unconverged).
- Critic: layer norm over each sample's C x T x H x W with one scale and shift per channel (TF's
  ``layer_norm``), so it works at any input size; LeakyReLU(0.2); last conv to one channel followed by
  LeakyReLU, flattened, and a Linear(., 1) head with no output activation (``critic_head: ivgan``;
  ``linear`` feeds the fourth block's features to the head directly).
- Convs use TF "SAME" padding (equal to padding 1 for even sizes; asymmetric for a size of 1, which
  16-frame clips reach in the critic's last conv).

``frames``, ``size``, ``width`` and ``z_dim`` are configurable (:class:`vidgan.config.ModelConfig`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from vidgan.config import ModelConfig

KERNEL = 4
STRIDE = 2


def _ivgan_uniform_(weight: torch.Tensor, c_in: int, c_out: int) -> None:
    k3 = KERNEL**3
    fan_in = c_in * k3
    fan_out = c_out * k3 / STRIDE**3
    bound = math.sqrt(3.0) * math.sqrt(4.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


def _linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.normal_(layer.weight, std=0.01)
    nn.init.zeros_(layer.bias)
    return layer


class BatchNormShift(nn.Module):
    """TF-contrib batch norm defaults: normalise with batch statistics, add a learned per-channel shift."""

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(x, None, None, training=True, eps=self.eps)
        return x + self.bias.view(1, -1, *([1] * (x.dim() - 2)))


def subpixel_deconv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, edges: str) -> torch.Tensor:
    """A kernel-4, stride-2 transposed convolution of ``x`` padded by one element on every side (``edges``:
    "replicate" or "zero"), cropped to twice the input's size: ``conv_transpose3d(pad(x), weight, bias, stride=2)``
    without its three outer elements per side (replicate) or ``conv_transpose3d(x, weight, bias, 2, padding=1)``
    (zero), exactly, computed as one stride-1, kernel-2 ``conv3d`` with eight times the output channels followed
    by a 3D pixel shuffle.

    Along one axis a stride-2 transposed conv gives output ``2m + r`` (``r`` in {0, 1}) the sum
    ``x[m] W[r] + x[m - 1] W[2 + r]``: a kernel-2 correlation per parity ``r``. PyTorch's CPU build has no fast
    3D transposed convolution (it takes a generic path ~8x slower per multiply-add than its oneDNN ``conv3d``
    here); this form runs on ``conv3d``. ``weight`` is a ``ConvTranspose3d``'s ``[c_in, c_out, 4, 4, 4]``.
    """
    c_in, c_out = weight.shape[:2]
    # tap k = 2 j + r of the transposed kernel is tap 1 - j of parity r's correlation kernel
    w = weight.view(c_in, c_out, 2, 2, 2, 2, 2, 2).flip(2, 4, 6)  # [ci, co, jt, rt, jh, rh, jw, rw]
    kernel = w.permute(3, 5, 7, 1, 0, 2, 4, 6).reshape(8 * c_out, c_in, 2, 2, 2)
    y = F.conv3d(F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate" if edges == "replicate" else "constant"), kernel)
    return _shuffle_and_crop(y, c_out, bias)  # outputs 2 m + r for m in [0, n] along each axis, of which 1 .. 2n


def _shuffle_and_crop(y: torch.Tensor, c_out: int, bias: torch.Tensor | None) -> torch.Tensor:
    """[B, 8 c_out, n + 1, ...] of eight parities (t, h, w major) -> [B, c_out, 2n, ...]: interleaved, the first and
    last element of each axis dropped, plus the bias."""
    b, _, t, h, w = y.shape
    y = y.view(b, 2, 2, 2, c_out, t, h, w).permute(0, 4, 5, 1, 6, 2, 7, 3).reshape(b, c_out, 2 * t, 2 * h, 2 * w)
    y = y[:, :, 1:-1, 1:-1, 1:-1]
    return y if bias is None else y + bias.view(1, -1, 1, 1, 1)


def transposed_deconv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, edges: str) -> torch.Tensor:
    """What :func:`subpixel_deconv3d` computes, by PyTorch's own ``conv_transpose3d`` (its fast path on CUDA)."""
    if edges == "zero":
        return F.conv_transpose3d(x, weight, bias, stride=STRIDE, padding=1)
    y = F.conv_transpose3d(F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate"), weight, bias, stride=STRIDE)
    t, h, w = (2 * n for n in x.shape[2:])
    return y[:, :, 3 : 3 + t, 3 : 3 + h, 3 : 3 + w]


class EdgeDeconv3d(nn.ConvTranspose3d):
    """ConvTranspose3d k4 s2 whose outputs at the clip's edges (first and last frame, border rows and columns)
    sum as many kernel taps as the interior ones (``edges="replicate"``), or iVGAN's padding 1 (``edges="zero"``).

    With padding 1 (TF "SAME"; iVGAN and the paper), output ``o`` sums the inputs ``i`` with ``o = 2i - 1 + k``: two
    taps per axis inside, one at each edge, so an edge output gets half the terms of an inner one along each axis
    and, through four layers, starts with a third of their spread (the first and last frame darker and blurrier,
    as seen on the GPU). With ``replicate`` the input is first padded by one replicated element on every side,
    transposed with no padding, and the result cropped to ``2n``: every output sums exactly two taps per axis.

    Same weights and parameter names as ``nn.ConvTranspose3d(c_in, c_out, 4, 2, padding=1)``. On the CPU the
    convolution runs as :func:`subpixel_deconv3d` (the same numbers, several times faster there); elsewhere as
    PyTorch's transposed convolution.
    """

    def __init__(self, c_in: int, c_out: int, edges: str = "replicate") -> None:
        if edges not in ("replicate", "zero"):
            raise ValueError(f"edges must be 'replicate' or 'zero', got {edges!r}")
        super().__init__(c_in, c_out, KERNEL, STRIDE, padding=1 if edges == "zero" else 0)
        self.edges = edges

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        deconv = subpixel_deconv3d if x.device.type == "cpu" else transposed_deconv3d
        return deconv(x, self.weight, self.bias, self.edges)


# along one axis, nearest doubling then a 3-tap kernel (w0, w1, w2) over replicated edges gives output 2i the taps
# (x[i-1], x[i]) with weights (w0, w1 + w2) and output 2i + 1 the taps (x[i], x[i+1]) with (w0 + w1, w2): a kernel-2
# correlation per parity; [parity, tap, k], parity 1 first (see subpixel_resize_conv3d)
_RESIZE_TAPS = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]])


def subpixel_resize_conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv3d(interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)`` over replicated edges,
    exactly, computed as one kernel-2 ``conv3d`` of ``x`` with eight times the output channels and a 3D pixel
    shuffle: a quarter of the multiply-adds (64 per input position and channel pair against 216), and no
    upsampled copy of ``x``.

    With ``x`` padded by one replicated element, the kernel-2 correlation's output ``j`` covers ``x[j-1], x[j]``:
    parity 0 of output ``i`` is its output ``i``, parity 1 its output ``i + 1``. Interleaving parity 1 before
    parity 0 (``2j`` from parity 1, ``2j + 1`` from parity 0) lines both up one element after the wanted output,
    so the shuffled result is cropped by one at each end. ``weight`` is a ``Conv3d``'s ``[c_out, c_in, 3, 3, 3]``.
    """
    a = _RESIZE_TAPS.to(weight)
    c_out, c_in = weight.shape[:2]
    kernel = torch.einsum("ati,buj,cvk,oxijk->abcoxtuv", a, a, a, weight).reshape(8 * c_out, c_in, 2, 2, 2)
    return _shuffle_and_crop(F.conv3d(F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate"), kernel), c_out, bias)


def upsample_conv3d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: tuple[int, int, int] = (2, 2, 2)
) -> torch.Tensor:
    """What :func:`subpixel_resize_conv3d` computes, by PyTorch's own ops: nearest upsampling by ``scale``, then the
    3x3x3 convolution over replicated edges (the path off the CPU, and for scales other than 2)."""
    up = F.interpolate(x, scale_factor=scale, mode="nearest")
    return F.conv3d(F.pad(up, (1,) * 6, mode="replicate"), weight, bias)


class ResizeConv3d(nn.Module):
    """Doubles T, H and W by nearest-neighbour upsampling, then a 3x3x3 convolution over replicated edges
    (Odena et al. 2016, "Deconvolution and checkerboard artifacts"): every output sums the same 27 taps, so there
    is neither an edge effect nor the even/odd pattern of a stride-2 transposed convolution."""

    def __init__(self, c_in: int, c_out: int, scale: tuple[int, int, int] = (2, 2, 2)) -> None:
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv3d(c_in, c_out, 3, 1, padding=1, padding_mode="replicate")
        k3 = 27
        bound = math.sqrt(3.0) * math.sqrt(2.0 / (c_in * k3 + c_out * k3))  # Glorot uniform, as the others keep scale
        with torch.no_grad():
            self.conv.weight.uniform_(-bound, bound)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and self.scale == (2, 2, 2):
            return subpixel_resize_conv3d(x, self.conv.weight, self.conv.bias)
        return upsample_conv3d(x, self.conv.weight, self.conv.bias, self.scale)


class Generator(nn.Module):
    """z [B, z_dim] -> video [B, 3, T, H, W], pixels at [-1, 1] (``cfg.output``: ``linear``, the default, leaves the
    range to the critic and values beyond it are clamped when clips become pixels; ``tanh``, iVGAN's, squashes).

    ``cfg.edges`` says how it upsamples: ``resize`` (the default, :class:`ResizeConv3d`: nearest doubling, then a
    3x3x3 conv), or a kernel-4, stride-2 transposed convolution (:class:`EdgeDeconv3d`) with replicated edges
    (``replicate``) or padding 1 (``zero``, as iVGAN and the paper's code).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim
        w = cfg.width
        self.top = 8 * w
        self.t0, self.s0 = cfg.frames // 16, cfg.size // 16
        # resize convolutions copy frames, so frames must differ from the start: at least two from the linear layer
        # (the first layer then upsamples space only)
        t_first = 2
        if cfg.edges == "resize" and self.t0 < 2:
            self.t0, t_first = 2, 1
        self.fc = _linear(cfg.z_dim, self.top * self.t0 * self.s0 * self.s0)
        self.bn0 = BatchNormShift(self.top)
        chans = [8 * w, 4 * w, 2 * w, w, 3]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:], strict=True)):
            if cfg.edges == "resize":
                deconv: nn.Module = ResizeConv3d(c_in, c_out, (t_first if i == 0 else 2, 2, 2))
            else:
                deconv = EdgeDeconv3d(c_in, c_out, cfg.edges)
            if isinstance(deconv, nn.ConvTranspose3d):
                _ivgan_uniform_(deconv.weight, c_in, c_out)
                nn.init.zeros_(deconv.bias)
            layers.append(deconv)
            if i < len(chans) - 2:
                layers += [BatchNormShift(c_out), nn.ReLU(inplace=True)]
        if cfg.output == "tanh":
            layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(-1, self.top, self.t0, self.s0, self.s0)
        return self.net(F.relu(self.bn0(x)))

    def sample_z(self, n: int, device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ N(0, I) for ``n`` clips."""
        return torch.randn(n, self.z_dim, device=device, generator=generator)


def _same_pad(size: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) for kernel 4, stride 2 along one dimension of ``size``."""
    out = -(-size // STRIDE)
    total = max((out - 1) * STRIDE + KERNEL - size, 0)
    return total // 2, total - total // 2


class SameConv3d(nn.Conv3d):
    """Conv3d k4 s2 with TensorFlow's "SAME" padding computed from the input size."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, KERNEL, STRIDE, padding=0)
        _ivgan_uniform_(self.weight, c_in, c_out)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size in reversed(x.shape[2:]):
            pads += _same_pad(int(size))
        if pads == [1] * 6:
            return F.conv3d(x, self.weight, self.bias, self.stride, padding=1)
        return super().forward(F.pad(x, pads))


class MinibatchStd(nn.Module):
    """Appends one feature map: the standard deviation of each feature across a group of ``group`` consecutive
    samples, averaged over features and positions (Karras et al. 2018, ProGAN; StyleGAN2's ``mbstd``).

    A per-sample critic cannot see that all generated clips look alike; with this map it can, so a generator
    that collapses to one output for every latent is told so at once. Groups are consecutive samples, so a batch
    of reals followed by fakes (as the trainer scores them) never mixes the two when ``group`` divides each half;
    a batch that ``group`` does not divide uses the largest common divisor.
    """

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        g = math.gcd(self.group, b)
        y = x.float().view(b // g, g, *x.shape[1:])
        y = (y.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=list(range(1, y.dim() - 1)))  # [b // g]
        y = y.to(x.dtype).repeat_interleave(g).view(b, 1, *([1] * (x.dim() - 2))).expand(b, 1, *x.shape[2:])
        return torch.cat([x, y], dim=1)


def _positions(cfg: ModelConfig, convs: int) -> int:
    t, s = cfg.frames, cfg.size
    for _ in range(convs):
        t, s = -(-t // STRIDE), -(-s // STRIDE)
    return t * s * s


def critic_feature_positions(cfg: ModelConfig) -> int:
    """Positions (T x H x W) of the critic's last conv block's features (16 for 32 x 64 x 64)."""
    return _positions(cfg, 4)


def critic_head_inputs(cfg: ModelConfig) -> int:
    """Number of values the iVGAN critic's last conv produces per sample (4 for 32 x 64 x 64)."""
    return _positions(cfg, 5)


class Critic(nn.Module):
    """video [B, 3, T, H, W] -> score [B] (unbounded: a Wasserstein critic)."""

    def __init__(self, cfg: ModelConfig, *, spectral_norm: bool = False, layer_norm: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        chans = [3, w, 2 * w, 4 * w, 8 * w]
        wrap = _spectral if spectral_norm else (lambda m: m)
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            blocks.append(wrap(SameConv3d(c_in, c_out)))
            if layer_norm:
                blocks.append(nn.GroupNorm(1, c_out, eps=1e-5))
            blocks.append(nn.LeakyReLU(0.2))
        extra = 0
        if cfg.minibatch_std:
            blocks.append(MinibatchStd(cfg.minibatch_std))
            extra = 1
        if cfg.critic_head == "ivgan":
            blocks += [wrap(SameConv3d(8 * w + extra, 1)), nn.LeakyReLU(0.2), nn.Flatten()]
            head = _linear(critic_head_inputs(cfg), 1)
        else:
            blocks.append(nn.Flatten())
            head = nn.Linear((8 * w + extra) * critic_feature_positions(cfg), 1)  # PyTorch's default init
        self.features = nn.Sequential(*blocks)
        self.head = wrap(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def _spectral(module: nn.Module) -> nn.Module:
    return spectral_norm(module)
