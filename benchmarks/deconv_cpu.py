"""The generator's upsampling convolutions on the CPU: PyTorch's own form against vidgan's sub-pixel form (one
kernel-2 ``conv3d`` + a pixel shuffle, the same numbers), layer by layer and for whole training iterations.

    .venv/bin/python benchmarks/deconv_cpu.py --threads 2                  # edges replicate: conv_transpose3d
    .venv/bin/python benchmarks/deconv_cpu.py --threads 2 --edges resize   # nearest upsampling + 3x3x3 conv3d

``--edges replicate`` (or ``zero``) times :func:`vidgan.models.subpixel_deconv3d` against ``conv_transpose3d``;
``--edges resize`` times :func:`vidgan.models.subpixel_resize_conv3d` against ``interpolate`` + ``conv3d`` (the
first layer of a 16-frame generator doubles space only and takes the plain path either way).

Layers: the four of a width-16 generator for 16 frames of 32x32 at batch 16 (``--width``, ``--batch``), forward
alone (what every critic update spends on its fakes) and forward + backward (the generator update), replicated
edges. Iterations: :meth:`vidgan.trainer.Trainer.train_iteration` of gp with the given ``--n-critic`` values, the
generator's ``EdgeDeconv3d`` switched between the two paths. Repetitions alternate the two paths, and the median
is printed; the machine's noise shows in the spread between repetitions (``--repeats``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def layer_step(f: Callable, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, grad: bool) -> None:
    y = f(x, weight, bias)
    if grad:
        y.sum().backward()


def timed(step: Callable[[], object], n: int) -> float:
    step()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return (time.perf_counter() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--n-critic", type=int, nargs="*", default=[5, 1])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--edges", choices=["replicate", "zero", "resize"], default="replicate")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from vidgan import models
    from vidgan.config import ModelConfig, TrainConfig
    from vidgan.synthetic import synthetic_batches
    from vidgan.trainer import Trainer
    from vidgan.variants import get_variant

    if args.edges == "resize":
        # what ResizeConv3d computes with PyTorch's own ops (replicated edges), and the sub-pixel form it uses
        paths: dict[str, Callable] = {
            "interpolate + conv3d": models.upsample_conv3d,
            "subpixel": models.subpixel_resize_conv3d,
        }
        attr = "subpixel_resize_conv3d"
    else:
        paths = {"conv_transpose3d": lambda x, w, b: models.transposed_deconv3d(x, w, b, args.edges),
                 "subpixel": lambda x, w, b: models.subpixel_deconv3d(x, w, b, args.edges)}
        attr = "subpixel_deconv3d"
    print(f"torch {torch.__version__}, {args.threads} threads, width {args.width}, batch {args.batch}, "
          f"edges {args.edges}")
    w = args.width
    layers = [(8 * w, 4 * w, (1, 2, 2)), (4 * w, 2 * w, (2, 4, 4)), (2 * w, w, (4, 8, 8)), (w, 3, (8, 16, 16))]
    for c_in, c_out, size in layers[1:] if args.edges == "resize" else layers:
        for grad in (False, True):
            x = torch.randn(args.batch, c_in, *size, requires_grad=grad)
            shape = (c_out, c_in, 3, 3, 3) if args.edges == "resize" else (c_in, c_out, 4, 4, 4)
            weight = (torch.randn(*shape) * 0.05).requires_grad_(grad)
            bias = torch.zeros(c_out, requires_grad=grad)
            times: dict[str, list[float]] = {k: [] for k in paths}
            for _ in range(args.repeats):
                for name, f in paths.items():
                    times[name].append(timed(lambda f=f, x=x, weight=weight, bias=bias, grad=grad: layer_step(
                        f, x, weight, bias, grad), 10))
            cells = ", ".join(f"{k} {statistics.median(v) * 1e3:.1f} ms" for k, v in times.items())
            print(f"layer {c_in:>4} -> {c_out:<3} from {size}, {'forward + backward' if grad else 'forward'}: {cells}",
                  flush=True)

    model = ModelConfig(frames=16, size=32, width=w, edges=args.edges)
    fast = getattr(models, attr)
    plain = next(f for k, f in paths.items() if k != "subpixel")
    for n_critic in args.n_critic:
        times = {k: [] for k in paths}
        for _ in range(args.repeats):
            for name in paths:
                # what the layer's forward calls on the CPU (EdgeDeconv3d also passes its edges, already in plain)
                setattr(models, attr, fast if name == "subpixel" else lambda x, w, b, *_, plain=plain: plain(x, w, b))
                try:
                    trainer = Trainer(model, get_variant("gp"), TrainConfig(batch_size=args.batch, n_critic=n_critic),
                                      device="cpu")
                    batches = synthetic_batches(model, args.batch)
                    n = max(30 // n_critic, 5)
                    times[name].append(timed(lambda trainer=trainer, batches=batches: trainer.fit(batches, 1), n))
                finally:
                    setattr(models, attr, fast)
        cells = ", ".join(f"{k} {statistics.median(v) * 1e3:.0f} ms" for k, v in times.items())
        print(f"gp iteration, n_critic {n_critic}: {cells}", flush=True)


if __name__ == "__main__":
    main()
