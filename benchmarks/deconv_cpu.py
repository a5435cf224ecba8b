"""The generator's transposed convolutions on the CPU: PyTorch's ``conv_transpose3d`` against vidgan's
sub-pixel form (:func:`vidgan.models.subpixel_deconv3d`, one kernel-2 ``conv3d`` + a pixel shuffle, the same
numbers), layer by layer and for whole training iterations.

    .venv/bin/python benchmarks/deconv_cpu.py --threads 2

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
    y = f(x, weight, bias, "replicate")
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
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from vidgan import models
    from vidgan.config import ModelConfig, TrainConfig
    from vidgan.synthetic import synthetic_batches
    from vidgan.trainer import Trainer
    from vidgan.variants import get_variant

    paths = {"conv_transpose3d": models.transposed_deconv3d, "subpixel": models.subpixel_deconv3d}
    print(f"torch {torch.__version__}, {args.threads} threads, width {args.width}, batch {args.batch}")
    w = args.width
    for c_in, c_out, size in [(8 * w, 4 * w, (1, 2, 2)), (4 * w, 2 * w, (2, 4, 4)), (2 * w, w, (4, 8, 8)),
                              (w, 3, (8, 16, 16))]:
        for grad in (False, True):
            x = torch.randn(args.batch, c_in, *size, requires_grad=grad)
            weight = (torch.randn(c_in, c_out, 4, 4, 4) * 0.05).requires_grad_(grad)
            bias = torch.zeros(c_out, requires_grad=grad)
            times: dict[str, list[float]] = {k: [] for k in paths}
            for _ in range(args.repeats):
                for name, f in paths.items():
                    times[name].append(timed(lambda f=f, x=x, weight=weight, bias=bias, grad=grad: layer_step(
                        f, x, weight, bias, grad), 10))
            cells = ", ".join(f"{k} {statistics.median(v) * 1e3:.1f} ms" for k, v in times.items())
            print(f"layer {c_in:>4} -> {c_out:<3} from {size}, {'forward + backward' if grad else 'forward'}: {cells}",
                  flush=True)

    model = ModelConfig(frames=16, size=32, width=w)
    subpixel = models.subpixel_deconv3d
    for n_critic in args.n_critic:
        times = {k: [] for k in paths}
        for _ in range(args.repeats):
            for name, f in paths.items():
                models.subpixel_deconv3d = f  # what EdgeDeconv3d.forward calls on the CPU
                try:
                    trainer = Trainer(model, get_variant("gp"), TrainConfig(batch_size=args.batch, n_critic=n_critic),
                                      device="cpu")
                    batches = synthetic_batches(model, args.batch)
                    n = max(30 // n_critic, 5)
                    times[name].append(timed(lambda trainer=trainer, batches=batches: trainer.fit(batches, 1), n))
                finally:
                    models.subpixel_deconv3d = subpixel
        cells = ", ".join(f"{k} {statistics.median(v) * 1e3:.0f} ms" for k, v in times.items())
        print(f"gp iteration, n_critic {n_critic}: {cells}", flush=True)


if __name__ == "__main__":
    main()
