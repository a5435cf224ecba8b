"""Benchmark: I3D clips/s (16 frames, 224) of vidgan's I3D next to cd-fvd's PyTorch I3D, and one Fréchet
distance at d = 400.

    .venv/bin/python benchmarks/fvd.py [--device cpu|cuda] [--batch 4] [--threads N] [--iters 3]

Both networks get the same preprocessed [B, 3, T, 224, 224] tensor under ``torch.inference_mode`` with TF32
off; cd-fvd's model (``cdfvd.third_party.i3d.pytorch_i3d.InceptionI3d``, same architecture) keeps random
weights, which do not change its speed, and nothing is downloaded. The two are timed alternately (median of
``--iters`` rounds) so that load from other processes affects both alike. ``end-to-end`` adds our
preprocessing (TF1 legacy resize of 64x64 uint8 frames to 224). ``vidgan I3D, torch max_pool3d`` is our
network with PyTorch's kernel (:func:`vidgan.fvd.i3d.torch_max_pool3d`) put back in place of
:func:`vidgan.fvd.i3d.max_pool3d` (on the CPU three 1D maxima, the same numbers); its outputs are checked equal to
ours.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from vidgan.fvd import frechet_distance, load_i3d
from vidgan.fvd import i3d as i3d_module
from vidgan.fvd.distance import feature_stats, frechet_distance_from_stats
from vidgan.fvd.i3d import no_tf32


@contextlib.contextmanager
def torch_max_pool() -> Iterator[None]:
    """Our I3D with PyTorch's own ``F.max_pool3d`` (the pooling before vidgan's CPU path)."""
    ours = i3d_module.max_pool3d
    i3d_module.max_pool3d = i3d_module.torch_max_pool3d
    try:
        yield
    finally:
        i3d_module.max_pool3d = ours


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def run(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    return run


def bench_i3d(args: argparse.Namespace, device: torch.device) -> None:
    from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d

    ours = load_i3d(device)
    theirs = InceptionI3d(400, in_channels=3).eval().to(device)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(args.batch, 3, args.frames, 224, 224, generator=gen) * 2 - 1).to(device)
    raw = torch.randint(0, 256, (args.batch, args.frames, 64, 64, 3), dtype=torch.uint8, generator=gen)
    timed = _timer(device)
    cases: dict[str, Callable[[], object]] = {
        "vidgan I3D": lambda: ours(x),
        "cd-fvd I3D": lambda: theirs(x),
        "vidgan I3D, torch max_pool3d": lambda: _with_torch_pool(ours, x),
        "vidgan end-to-end (64x64 uint8 -> features)": lambda: ours.features(raw),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    with torch.inference_mode(), no_tf32():
        for fn in cases.values():  # warm-up (cuDNN autotuning, allocator)
            timed(fn)
        for _ in range(args.iters):
            for name, fn in cases.items():
                times[name].append(timed(fn))
    print(f"I3D, {args.frames} frames at 224, batch {args.batch}, {args.iters} rounds, median:")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<45s} {args.batch / med:8.2f} clips/s  ({med * 1000:8.1f} ms/batch)")
    ratio = statistics.median(times["cd-fvd I3D"]) / statistics.median(times["vidgan I3D"])
    print(f"  speed-up of vidgan over cd-fvd: {ratio:.2f}x")
    pool = statistics.median(times["vidgan I3D, torch max_pool3d"]) / statistics.median(times["vidgan I3D"])
    with torch.inference_mode(), no_tf32():
        same = torch.equal(ours(x), _with_torch_pool(ours, x))
    print(f"  speed-up of vidgan's max pool over torch's: {pool:.2f}x (same logits: {same})")
    if device.type == "cuda":
        print(f"  peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


def _with_torch_pool(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch_max_pool():
        return net(x)


def bench_frechet(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(args.n, 400)), rng.normal(size=(args.n, 400)) * 1.1
    stats_a, stats_b = feature_stats(a), feature_stats(b)
    t_stats = []
    t_full = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        frechet_distance_from_stats(*stats_a, *stats_b)
        t_stats.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        frechet_distance(a, b)
        t_full.append(time.perf_counter() - t0)
    print(f"Fréchet distance, d = 400 (median of {args.iters}):")
    print(f"  from mean/covariance:            {statistics.median(t_stats) * 1000:8.1f} ms")
    print(f"  from features (N = {args.n}, incl. cov): {statistics.median(t_full) * 1000:8.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=4, help="clips per forward")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    ap.add_argument("--iters", type=int, default=3, help="timed rounds")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--n", type=int, default=2048, help="feature count for the Fréchet timing")
    ap.add_argument("--skip-i3d", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {device} ({name}), torch {torch.__version__}")
    if not args.skip_i3d:
        bench_i3d(args, device)
    bench_frechet(args)


if __name__ == "__main__":
    main()
