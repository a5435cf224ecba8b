"""DeepMind's Kinetics-400 Inception-I3D with the numerics of the canonical FVD, in PyTorch.

Layout: PyTorch's ``[B, C, T, H, W]``. Differences from a naive port that matter for exactness:

* TF "SAME" padding, asymmetric in the stride-2 layers (computed from each layer's actual input size);
* BatchNorm without gamma and with eps 1e-3 (Sonnet's default);
* the canonical preprocessing (:mod:`vidgan.fvd.resize`), features = the 400 logits averaged over time.

For speed the BatchNorm of every unit is folded into its convolution at load time
(``w * rsqrt(var + eps)``, ``beta - mean * rsqrt(var + eps)``: the same function, float32 rounding aside),
and in each Inception block the three 1x1 convolutions that read the block input are run as one.
On the CPU a 3D max pool runs as three 1D maxima (:func:`max_pool3d`): the same numbers, faster.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .resize import resize_bilinear_tf1

BN_EPS = 1e-3
MIN_FRAMES = 9
INPUT_SIZE = 224
NUM_CLASSES = 400

# name: (in, [b0, b1a, b1b, b2a, b2b, b3])
INCEPTION_BLOCKS: dict[str, tuple[int, list[int]]] = {
    "Mixed_3b": (192, [64, 96, 128, 16, 32, 32]),
    "Mixed_3c": (256, [128, 128, 192, 32, 96, 64]),
    "Mixed_4b": (480, [192, 96, 208, 16, 48, 64]),
    "Mixed_4c": (512, [160, 112, 224, 24, 64, 64]),
    "Mixed_4d": (512, [128, 128, 256, 24, 64, 64]),
    "Mixed_4e": (512, [112, 144, 288, 32, 64, 64]),
    "Mixed_4f": (528, [256, 160, 320, 32, 128, 128]),
    "Mixed_5b": (832, [256, 160, 320, 32, 128, 128]),
    "Mixed_5c": (832, [384, 192, 384, 48, 128, 128]),
}


def same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) of one dimension of input size ``size``."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _same_pads(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> tuple[int, ...]:
    pads: list[int] = []
    for dim in (2, 1, 0):  # F.pad wants the last dimension first
        pads.extend(same_pad(x.shape[2 + dim], kernel[dim], stride[dim]))
    return tuple(pads)


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    pads = _same_pads(x, kernel, stride)
    return F.pad(x, pads) if any(pads) else x


class Unit3D(nn.Module):
    """Conv3d (TF SAME padding) + folded BatchNorm + ReLU; the logits unit has a plain bias and no ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, relu: bool = True) -> None:
        super().__init__()
        self.kernel = (kernel,) * 3
        self.stride = (stride,) * 3
        self.relu = relu
        self.weight = nn.Parameter(torch.empty(cout, cin, *self.kernel), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(cout), requires_grad=False)
        # Stride 1 with an odd kernel: SAME is symmetric and the convolution can pad by itself.
        self._sym = stride == 1 and kernel % 2 == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._sym:
            y = F.conv3d(x, self.weight, self.bias, padding=self.kernel[0] // 2)
        else:
            y = F.conv3d(_pad_same(x, self.kernel, self.stride), self.weight, self.bias, stride=self.stride)
        return F.relu(y, inplace=True) if self.relu else y


#: a CPU max pool works through the channels in this many slices, so that its temporaries (a slice's padded input and
#: partial maxima) stay about an eighth of its input
POOL_SLICES = 8


def max_pool3d(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
               pads: tuple[int, ...] = (0,) * 6) -> torch.Tensor:
    """``F.max_pool3d`` of ``[B, C, T, H, W]`` zero-padded by ``pads`` (``F.pad``'s order, W first; every pool input
    here follows a ReLU, so zeros give what TF's -inf would).

    On the CPU a maximum over a box is the maximum over W, then H, then T: three strided reductions give exactly the
    numbers of PyTorch's CPU kernel, which also finds and keeps the int64 index of every maximum, and make the whole
    I3D ~1.6x faster on one thread (``benchmarks/fvd.py`` prints both). They run on :data:`POOL_SLICES` slices of
    the channels into one output, so the pool's peak memory is its input, its output and an eighth of the input (the
    padded slice and its partial maxima), less than the kernel's (input, output and the indices, twice the output).
    On a GPU, PyTorch's own kernel (:func:`torch_max_pool3d`)."""
    if x.is_cuda:
        return torch_max_pool3d(x, kernel, stride, pads)
    sizes = [x.shape[2 + i] + pads[4 - 2 * i] + pads[5 - 2 * i] for i in range(3)]  # T, H, W padded
    out = x.new_empty(*x.shape[:2], *((n - k) // s + 1 for n, k, s in zip(sizes, kernel, stride, strict=True)))
    start = 0
    for part in x.tensor_split(min(POOL_SLICES, x.shape[1]), dim=1):
        y = F.pad(part, pads) if any(pads) else part
        for dim in (4, 3, 2):
            k, s = kernel[dim - 2], stride[dim - 2]
            if k > 1 or s > 1:
                y = y.unfold(dim, k, s).amax(-1)
        out[:, start:start + part.shape[1]] = y
        start += part.shape[1]
    return out


def torch_max_pool3d(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                     pads: tuple[int, ...] = (0,) * 6) -> torch.Tensor:
    """:func:`max_pool3d` with PyTorch's own kernel: what a GPU runs, and the CPU's reference."""
    if len(set(pads)) == 1:  # symmetric: the kernel pads by itself (with -inf)
        return F.max_pool3d(x, kernel, stride, padding=pads[0])
    return F.max_pool3d(F.pad(x, pads), kernel, stride)


def _max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    # TF pads with -inf; every pool input follows a ReLU (>= 0), so zero padding gives the same maxima.
    return max_pool3d(x, kernel, stride, _same_pads(x, kernel, stride))


class Inception(nn.Module):
    """Inception block; the three 1x1 convs on the block input (b0, b1a, b2a) run as one conv."""

    def __init__(self, cin: int, ch: list[int]) -> None:
        super().__init__()
        self.split = [ch[0], ch[1], ch[3]]
        self.stem = Unit3D(cin, sum(self.split))
        self.b1 = Unit3D(ch[1], ch[2], kernel=3)
        self.b2 = Unit3D(ch[3], ch[4], kernel=3)
        self.b3 = Unit3D(cin, ch[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0, b1, b2 = torch.split(self.stem(x), self.split, dim=1)
        b3 = self.b3(max_pool3d(x, (3, 3, 3), (1, 1, 1), (1,) * 6))  # symmetric SAME; zeros do as -inf after ReLU
        return torch.cat([b0, self.b1(b1), self.b2(b2), b3], dim=1)


class I3D(nn.Module):
    """Kinetics-400 I3D; ``forward`` maps preprocessed video to the 400 time-averaged logits.

    Input conventions:

    * :meth:`forward`: float32 ``[B, 3, T, 224, 224]`` in [-1, 1], already preprocessed.
    * :meth:`features`: raw video, either ``uint8 [B, T, H, W, 3]`` with values 0..255 (clip shards),
      or floating ``[B, 3, T, H, W]`` in [-1, 1] (generator output). Any H, W: frames are resized to 224
      with TF1's legacy bilinear resize as the canonical FVD does. T >= 9.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1a = Unit3D(3, 64, kernel=7, stride=2)
        self.conv2b = Unit3D(64, 64)
        self.conv2c = Unit3D(64, 192, kernel=3)
        self.blocks = nn.ModuleDict({name: Inception(cin, ch) for name, (cin, ch) in INCEPTION_BLOCKS.items()})
        self.logits = Unit3D(1024, NUM_CLASSES, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_frames(x.shape[2])
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"I3D.forward wants 224x224 frames, got {tuple(x.shape[-2:])}: use features()")
        b = self.blocks
        x = self.conv1a(x)
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.conv2c(self.conv2b(x))
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = b["Mixed_3c"](b["Mixed_3b"](x))
        x = _max_pool_same(x, (3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = b[name](x)
        x = _max_pool_same(x, (2, 2, 2), (2, 2, 2))
        x = b["Mixed_5c"](b["Mixed_5b"](x))
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # VALID
        return self.logits(x).squeeze(4).squeeze(3).mean(dim=2)

    def preprocess(self, videos: torch.Tensor) -> torch.Tensor:
        """Raw video (see class docstring) -> float32 ``[B, 3, T, 224, 224]`` in [-1, 1] on the model's device.

        Float [-1, 1] input is mapped to [0, 255] by ``(x + 1) * 127.5`` (clamped, not rounded: the
        canonical pipeline never rounds either) and then resized like uint8 input.
        """
        device = self.logits.weight.device
        if videos.dtype == torch.uint8:
            if videos.ndim != 5 or videos.shape[-1] != 3:
                raise ValueError(f"uint8 videos must be [B, T, H, W, 3], got {tuple(videos.shape)}")
            x = videos.to(device)
        elif videos.is_floating_point():
            if videos.ndim != 5 or videos.shape[1] != 3:
                raise ValueError(f"float videos must be [B, 3, T, H, W] in [-1, 1], got {tuple(videos.shape)}")
            x = ((videos.to(device, torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5).permute(0, 2, 3, 4, 1)
        else:
            raise TypeError(f"videos must be uint8 or floating point, got {videos.dtype}")
        check_frames(x.shape[1])
        x = resize_bilinear_tf1(x, INPUT_SIZE)  # [B, T, 224, 224, 3] float32 in [0, 255]
        x = x * (2.0 / 255.0) - 1.0
        return x.permute(0, 4, 1, 2, 3).contiguous()

    @torch.inference_mode()
    def features(self, videos: torch.Tensor) -> torch.Tensor:
        """The 400 time-averaged logits (float32, on the model's device) of one batch of raw video."""
        with no_tf32():
            return self(self.preprocess(videos))

    def load_converted(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load the output of :func:`vidgan.fvd.weights.convert`, folding BatchNorm into the convolutions."""
        used: set[str] = set()

        def folded(unit: str) -> tuple[torch.Tensor, torch.Tensor]:
            w = tensors[f"{unit}.weight"].to(torch.float64)
            used.add(f"{unit}.weight")
            if f"{unit}.bias" in tensors:
                used.add(f"{unit}.bias")
                return w, tensors[f"{unit}.bias"].to(torch.float64)
            inv = torch.rsqrt(tensors[f"{unit}.var"].to(torch.float64) + BN_EPS)
            used.update(f"{unit}.{k}" for k in ("beta", "mean", "var"))
            bias = tensors[f"{unit}.beta"].to(torch.float64) - tensors[f"{unit}.mean"].to(torch.float64) * inv
            return w * inv.view(-1, 1, 1, 1, 1), bias

        def assign(mod: Unit3D, units: list[str]) -> None:
            ws, bs = zip(*(folded(u) for u in units), strict=True)
            w, bias = torch.cat(ws), torch.cat(bs)
            if w.shape != mod.weight.shape:
                raise ValueError(f"{units}: weight shape {tuple(w.shape)} != {tuple(mod.weight.shape)}")
            mod.weight.data.copy_(w.to(torch.float32))
            mod.bias.data.copy_(bias.to(torch.float32))

        assign(self.conv1a, ["Conv3d_1a_7x7"])
        assign(self.conv2b, ["Conv3d_2b_1x1"])
        assign(self.conv2c, ["Conv3d_2c_3x3"])
        for name, blk in self.blocks.items():
            assert isinstance(blk, Inception)
            assign(blk.stem, [f"{name}/Branch_{i}/Conv3d_0a_1x1" for i in range(3)])
            assign(blk.b1, [f"{name}/Branch_1/Conv3d_0b_3x3"])
            assign(blk.b2, [f"{name}/Branch_2/Conv3d_0b_3x3"])
            assign(blk.b3, [f"{name}/Branch_3/Conv3d_0b_1x1"])
        assign(self.logits, ["Logits/Conv3d_0c_1x1"])
        unused = set(tensors) - used
        if unused:
            raise ValueError(f"unused I3D tensors: {sorted(unused)[:5]}")


def check_frames(t: int) -> None:
    if t < MIN_FRAMES:
        raise ValueError(
            f"I3D needs at least {MIN_FRAMES} frames, got {t}: Mixed_5c sees ceil(T/8) positions and the "
            "final 2-frame average pool needs 2 (the reference silently returns NaN)"
        )


@contextmanager
def no_tf32() -> Iterator[None]:
    """Full float32 matmuls and convolutions on CUDA (TF32 would change the features), restored afterwards.

    Uses PyTorch's per-backend ``fp32_precision = "ieee"`` where it exists (reading the legacy
    ``allow_tf32`` flags raises once anyone has set the new ones), else ``allow_tf32 = False``.
    """
    b = torch.backends
    if hasattr(b.cuda.matmul, "fp32_precision") and hasattr(b.cudnn, "conv"):
        targets = [b.cuda.matmul, b.cudnn.conv]
        saved = [t.fp32_precision for t in targets]
        try:
            for t in targets:
                t.fp32_precision = "ieee"
            yield
        finally:
            for t, v in zip(targets, saved, strict=True):
                t.fp32_precision = v
        return
    mm, cd = b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32
    b.cuda.matmul.allow_tf32 = False
    b.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        b.cuda.matmul.allow_tf32 = mm
        b.cudnn.allow_tf32 = cd
