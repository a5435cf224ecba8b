"""Training-step throughput of vidgan's iVGAN trainer, optionally against the paper's public code.

What is measured
    One *iteration* = ``n_critic`` (5) critic updates, each on its own real batch, then one generator
    update: :meth:`vidgan.trainer.Trainer.train_iteration`, end to end (noise, generator, critic
    forward/backward, gradient penalty with its double backward, Adam steps, the one host sync).
    Printed: seconds per iteration (median, min, max over the timed repetitions), iterations/s
    (= 1 / median), FLOPs per iteration and achieved GFLOP/s (= FLOPs per iteration / median seconds).

How FLOPs are counted
    ``torch.utils.flop_counter.FlopCounterMode`` over one real, untimed iteration (the first warmup
    iteration), so forward, backward and the penalty's double backward are all counted as the ATen ops
    actually dispatched (convolutions, transposed convolutions, their backward ops, matmuls). Element-wise
    ops (norms, activations, Adam) are not counted, for either side. The counter's per-module tracker is
    swapped for a no-op (it breaks ``autograd.grad`` w.r.t. a leaf in torch 2.13); only totals are used.

The paper's code (``--paper-code PATH``)
    A checkout of ``talcron/frame-prediction-pytorch`` (the PyTorch port of iVGAN the paper trained
    with). Nothing of it lives in this repository; it is imported from PATH at run time. The benchmark
    builds its ``runner.ImprovedVideoGAN`` (its ``Generator``/``Discriminator`` with ``init_weights``,
    its AdamW optimisers, its ``DataParallel`` wrapping, which on a machine without CUDA is a plain
    pass-through) and drives it exactly as ``ImprovedVideoGAN.train`` does, minus data loading and the
    interval logging (gif/FVD/checkpoint): per step ``_increment_total_step()`` then
    ``optimize(batch, 'discriminator' | 'generator')`` chosen by its own ``(step + 1) % 6`` rule, keeping
    the returned fake batch alive until the next step as its loop does. The step counter starts at 5 so
    each timed iteration is exactly its 5 critic steps + 1 generator step. Its critic step builds the
    generator graph, runs three separate critic forwards (fake, real, interpolates) with three backward
    calls and its per-channel gradient penalty; its generator step also computes critic weight
    gradients (``module.requires_grad = False`` is a plain attribute, not a parameter switch). Runtime
    shims, no edits to its files: a no-op stand-in for the Comet ``experiment``; a stub ``torchvision``
    module when torchvision is not installed (it is only used to write gifs); its per-step ``print``
    goes to /dev/null. Its models are hard-wired to 64x64x32, width 64, z 100; at other shapes only our
    figures are printed. Variant mapping: gp -> defaults, sn_gp -> spec_norm, sn -> spec_norm + no_gp,
    zero_gp -> zero_centered, one_sided -> one_sided, drift -> drift_penalty; r1 has no counterpart.
    It runs in fp32 (``--bf16`` only affects ours, and only on CUDA).

Fairness
    Both sides get the same synthetic clips (:mod:`vidgan.synthetic`, shape [B, 3, T, H, W]; ours as
    uint8 as the trainer takes them, theirs pre-scaled to [-1, 1] floats as its loader gives them), the
    same device and thread count. Repetitions are interleaved (ours, theirs, then theirs, ours, ...), so
    background load on a shared machine hits both alike; the ratio is of the medians, and the median of
    the per-repetition ratios is printed too. CUDA work is synchronised before each clock reading.

Usage::

    python benchmarks/train_step.py --batch 4 --iterations 5 --warmup 1 --paper-code /tmp/paper-code

Modes
    ``--data DIR [--reader arrow|ray]``: ours is fed by the real reader (a shard directory of the model's
    clip shape) instead of pre-made batches; the report adds the data wait as a fraction of the iteration
    (``data_wait_s``: the time the training thread waited in ``next()``). The paper code keeps the pool.
    ``--trials 1,2,4``: for each N, N trainer processes (ours only) on one device at once, started
    together after their warmup; prints each trial's s/iteration and the aggregate iterations/s.
    ``--profile``: after the timed repetitions, ``--profile-iterations`` more of ours under torch.profiler;
    prints the top kernels (CUDA) and the top ops by self CPU time.
    ``--fp32-penalty`` (the penalty's critic pass outside bf16 autocast, as before) and ``--channels-last``
    (models and real batches in channels_last_3d) are switches to compare on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import itertools
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from vidgan.config import ModelConfig, TrainConfig
from vidgan.synthetic import synthetic_batch
from vidgan.trainer import Trainer, pick_device, to_model_range
from vidgan.variants import PRESETS, get_variant

PAPER_SHAPE = {"frames": 32, "size": 64, "width": 64, "z_dim": 100}
# Our variant name -> the paper code's ImprovedVideoGAN switches.
PAPER_FLAGS: dict[str, dict[str, bool]] = {
    "gp": {},
    "sn_gp": {"spec_norm": True},
    "sn": {"spec_norm": True, "no_gp": True},
    "zero_gp": {"zero_centered": True},
    "one_sided": {"one_sided": True},
    "drift": {"drift_penalty": True},
}


@dataclass
class Contender:
    """One training loop under test: a callable that runs one full iteration, and what was measured."""

    name: str
    step: Callable[[], None]
    flops: int = 0
    times: list[float] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)  # ours: train_iteration's, for data wait

    @property
    def median(self) -> float:
        return statistics.median(self.times)


# --------------------------------------------------------------------------- ours
def open_batches(args: argparse.Namespace, pool: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    """The pre-made pool, cycled; or with ``--data`` the real reader's endless stream."""
    if not args.data:
        return itertools.cycle(pool)
    from vidgan.shards import describe

    shape = describe(args.data).clip_shape
    if shape[:3] != (args.frames, args.size, args.size):
        want = (args.frames, args.size, args.size)
        raise SystemExit(f"--data {args.data} holds {shape[:3]} clips, the model takes {want}")
    if args.reader == "ray":
        from vidgan.ray_stream import ray_clip_batches as stream
    else:
        from vidgan.data import arrow_clip_batches as stream
    return stream(args.data, args.batch, shuffle=True, flip=True, seed=args.seed)


def make_ours(args: argparse.Namespace, device: torch.device, pool: list[torch.Tensor]) -> Contender:
    model = ModelConfig(frames=args.frames, size=args.size, width=args.width, z_dim=args.z_dim)
    # the paper's 5 critic updates per iteration (vidgan's default is 1), so an iteration is what the paper's runs
    train = TrainConfig(batch_size=args.batch, n_critic=5, bf16=args.bf16, seed=args.seed)
    trainer = Trainer(model, get_variant(args.variant), train, device=device)
    if args.fp32_penalty:
        trainer.penalty_autocast = None
    if args.channels_last:
        for net in (trainer.generator, trainer.critic):
            net.to(memory_format=torch.channels_last_3d)  # in place: the optimisers keep their parameters
        trainer.input_format = torch.channels_last_3d
    batches = open_batches(args, pool)
    c = Contender("vidgan", lambda: None)

    def step() -> None:
        c.metrics.append(trainer.train_iteration(batches))

    c.step = step
    return c


# --------------------------------------------------------------------------- the paper's code
class _NullExperiment:
    """Stands in for comet_ml.Experiment: every logging call is accepted and dropped."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *a, **k: None


def _import_paper_runner(path: Path) -> types.ModuleType:
    if not (path / "runner.py").is_file() or not (path / "model" / "improved_video_gan.py").is_file():
        raise SystemExit(f"--paper-code {path}: no runner.py / model/improved_video_gan.py there")
    if importlib.util.find_spec("torchvision") is None:  # only used by its gif writer, never called here
        tv = types.ModuleType("torchvision")
        tv_utils = types.ModuleType("torchvision.utils")

        def save_image(*_a: Any, **_k: Any) -> None:
            raise RuntimeError("torchvision stub: the benchmark never writes images")

        tv_utils.save_image = save_image  # type: ignore[attr-defined]
        tv.utils = tv_utils  # type: ignore[attr-defined]
        sys.modules.setdefault("torchvision", tv)
        sys.modules.setdefault("torchvision.utils", tv_utils)
    for clash in ("runner", "model", "utils", "data", "fvd"):
        if clash in sys.modules and not str(getattr(sys.modules[clash], "__file__", "")).startswith(str(path)):
            raise SystemExit(f"a module named {clash!r} is already imported; cannot import the paper code's")
    sys.path.insert(0, str(path))
    try:
        return importlib.import_module("runner")
    finally:
        sys.path.remove(str(path))


def make_paper(
    args: argparse.Namespace, device: torch.device, pool: list[torch.Tensor], out_dir: str
) -> Contender | None:
    shape = {"frames": args.frames, "size": args.size, "width": args.width, "z_dim": args.z_dim}
    if shape != PAPER_SHAPE:
        print(f"paper code: skipped, its models are fixed to {PAPER_SHAPE}, asked for {shape}")
        return None
    if args.variant not in PAPER_FLAGS:
        print(f"paper code: skipped, variant {args.variant!r} has no counterpart there")
        return None
    runner = _import_paper_runner(Path(args.paper_code).resolve())
    torch.manual_seed(args.seed)
    gan = runner.ImprovedVideoGAN(
        dataloader=None,
        experiment=_NullExperiment(),
        device=device,
        num_gpu=1,
        batch_size=args.batch,
        num_frames=args.frames,
        crop_size=args.size,
        learning_rate=1e-4,  # main_train.py's default --lr
        z_dim=args.z_dim,
        critic_iterations=5,
        out_dir=out_dir,
        **PAPER_FLAGS[args.variant],
    )
    gan.step = gan.critic_iterations  # align: the next 6 steps are 5 critic steps, then 1 generator step
    batches: Iterator[torch.Tensor] = itertools.cycle([to_model_range(b, device) for b in pool])
    state: dict[str, torch.Tensor | None] = {"fake_batch": None}
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the benchmark

    def step() -> None:
        kinds = []
        with contextlib.redirect_stdout(devnull):
            for _ in range(gan.critic_iterations + 1):
                # The body of ImprovedVideoGAN.train's inner loop, without _interval_log.
                gan._increment_total_step()
                batch = next(batches).to(gan.device)
                critic_turn = (gan.step + 1) % (gan.critic_iterations + 1) != 0
                kind = runner.DISCRIMINATOR if critic_turn else runner.GENERATOR
                kinds.append(kind)
                state["fake_batch"] = gan.optimize(batch, kind)
        expected = [runner.DISCRIMINATOR] * gan.critic_iterations + [runner.GENERATOR]
        assert kinds == expected, kinds

    return Contender("paper code", step)


# --------------------------------------------------------------------------- measurement
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _GlobalOnlyTracker:
    """Replaces FlopCounterMode's per-module tracker: its backward hooks make ``torch.autograd.grad``
    with respect to a leaf input (the gradient penalty) raise in torch 2.13; totals need no modules."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnlyTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def count_flops(c: Contender, device: torch.device) -> None:
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnlyTracker()  # type: ignore[assignment]
    with counter:
        c.step()
    _sync(device)
    c.flops = counter.get_total_flops()


def run(args: argparse.Namespace) -> list[Contender]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    model = ModelConfig(frames=args.frames, size=args.size, width=args.width, z_dim=args.z_dim)
    pool = [synthetic_batch(model, args.batch, seed=args.seed, index=i) for i in range(6)]
    out_dir = tempfile.mkdtemp(prefix="train_step_bench_")
    contenders = [make_ours(args, device, pool)]
    if args.paper_code:
        paper = make_paper(args, device, pool, os.path.join(out_dir, "paper"))
        if paper is not None:
            contenders.append(paper)

    print(
        f"device={device} threads={torch.get_num_threads()} interop={torch.get_num_interop_threads()} "
        f"mkldnn={torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled} torch={torch.__version__} "
        f"load_avg={os.getloadavg()[0]:.1f}"
    )
    print(
        f"config: frames={args.frames} size={args.size} width={args.width} z_dim={args.z_dim} batch={args.batch} "
        f"variant={args.variant} bf16={args.bf16 and device.type == 'cuda'} warmup={args.warmup} "
        f"iterations={args.iterations} (1 iteration = 5 critic + 1 generator updates)"
    )
    # Warmup; the first warmup iteration of each side is the FLOP-counted one.
    for c in contenders:
        t0 = time.perf_counter()
        count_flops(c, device)
        print(
            f"  [{c.name}] flop-count iteration: {time.perf_counter() - t0:.2f}s, {c.flops / 1e9:.2f} GFLOP/iteration",
            flush=True,
        )
    for i in range(max(args.warmup - 1, 0)):
        for c in contenders if i % 2 == 0 else contenders[::-1]:
            c.step()
        _sync(device)
    for c in contenders:
        c.metrics.clear()
    # Timed, interleaved: the order alternates every repetition.
    for i in range(args.iterations):
        for c in contenders if i % 2 == 0 else contenders[::-1]:
            _sync(device)
            t0 = time.perf_counter()
            c.step()
            _sync(device)
            c.times.append(time.perf_counter() - t0)
            print(f"  rep {i + 1}/{args.iterations} [{c.name}] {c.times[-1]:.3f}s", flush=True)
    return contenders


def report(contenders: list[Contender], args: argparse.Namespace) -> None:
    print(f"load_avg at end={os.getloadavg()[0]:.1f}")
    header = f"{'':12} {'s/iter med':>10} {'min':>8} {'max':>8} {'iter/s':>8} {'GFLOP/iter':>11} {'GFLOP/s':>8}"
    print(header)
    for c in contenders:
        med = c.median
        print(
            f"{c.name:12} {med:10.3f} {min(c.times):8.3f} {max(c.times):8.3f} {1 / med:8.4f} "
            f"{c.flops / 1e9:11.2f} {c.flops / 1e9 / med:8.2f}"
        )
    ours_metrics = contenders[0].metrics
    if args.data and ours_metrics:
        wait = sum(m["data_wait_s"] for m in ours_metrics)
        total = sum(m["iter_time_s"] for m in ours_metrics)
        worst = max(m["data_wait_s"] / m["iter_time_s"] for m in ours_metrics)
        print(
            f"data ({args.reader} reader, {args.data}): wait {1e3 * wait / len(ours_metrics):.1f} ms/iteration = "
            f"{100 * wait / total:.2f}% of the iteration (worst iteration {100 * worst:.2f}%)"
        )
    if pick_device(args.device).type == "cuda":
        print(f"peak GPU memory allocated in this process: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    if len(contenders) == 2:
        ours, theirs = contenders
        ratio = theirs.median / ours.median
        paired = statistics.median(t / o for o, t in zip(ours.times, theirs.times, strict=True))
        print(
            f"speed-up (iter/s ours / theirs): {ratio:.3f}x (ratio of medians); "
            f"median of per-repetition ratios {paired:.3f}x; FLOPs ours/theirs {ours.flops / theirs.flops:.3f}; "
            f"target >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--frames", type=int, default=32, choices=(16, 32))
    p.add_argument("--size", type=int, default=64, choices=(32, 64, 128))
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--z-dim", type=int, default=100)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--variant", default="gp", choices=sorted(PRESETS))
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per contender")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations per contender (the first counts FLOPs)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for ours (CUDA only, as in the trainer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paper-code", default=None, help="checkout of talcron/frame-prediction-pytorch to compare with")
    p.add_argument("--data", default=None, help="feed ours from this shard directory (the real reader)")
    p.add_argument("--reader", default="arrow", choices=("arrow", "ray"), help="with --data: which reader")
    p.add_argument("--trials", default=None, help="comma-separated trainer counts to run at once, e.g. 1,2,4")
    p.add_argument("--profile", action="store_true", help="profile ours with torch.profiler after the timing")
    p.add_argument("--profile-iterations", type=int, default=1)
    p.add_argument("--top", type=int, default=15, help="rows of the profile tables")
    p.add_argument("--fp32-penalty", action="store_true", help="penalty critic pass outside bf16 autocast")
    p.add_argument("--channels-last", action="store_true", help="channels_last_3d models and real batches")
    args = p.parse_args(argv)
    if args.iterations < 1:
        p.error("--iterations must be >= 1")
    if args.trials is not None:
        try:
            args.trial_counts = [int(n) for n in args.trials.split(",")]
        except ValueError:
            p.error(f"--trials takes counts like 1,2,4, got {args.trials!r}")
        if min(args.trial_counts) < 1:
            p.error("--trials counts must be >= 1")
    return args


# --------------------------------------------------------------------------- profile
def profile(c: Contender, args: argparse.Namespace, device: torch.device) -> None:
    """Top kernels (CUDA) and top ops by self CPU time over ``--profile-iterations`` iterations of ``c``."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    _sync(device)
    t0 = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        for _ in range(args.profile_iterations):
            c.step()
        _sync(device)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    print(f"\nprofile: {args.profile_iterations} iteration(s) of {c.name}, {wall:.3f} s wall under the profiler")
    tables = [("ops by self CPU time", [e for e in events if e.device_type == DeviceType.CPU], "self_cpu_time_total")]
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type != DeviceType.CPU]
        tables.insert(0, ("kernels by GPU time", kernels, "self_device_time_total"))
    for title, rows, key in tables:
        total = sum(getattr(e, key) for e in rows) or 1.0
        rows = sorted(rows, key=lambda e: getattr(e, key), reverse=True)[: args.top]
        print(f"top {len(rows)} {title} (total {total / 1e3:.1f} ms):")
        print(f"  {'share':>6} {'ms':>9} {'calls':>7}  name")
        for e in rows:
            t = getattr(e, key)
            print(f"  {100 * t / total:5.1f}% {t / 1e3:9.2f} {e.count:7d}  {e.key[:110]}")


# --------------------------------------------------------------------------- several trials at once
def _trial(args: argparse.Namespace, index: int, n: int, barrier: Any, results: Any) -> None:
    """One trial process: build ours, warm up, start with the others, time ``--iterations`` iterations."""
    try:
        torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // n))
        device = pick_device(args.device)
        model = ModelConfig(frames=args.frames, size=args.size, width=args.width, z_dim=args.z_dim)
        args.seed += index
        pool = [synthetic_batch(model, args.batch, seed=args.seed, index=i) for i in range(6)]
        c = make_ours(args, device, pool)
        for _ in range(max(args.warmup, 1)):
            c.step()
        _sync(device)
        c.metrics.clear()
        barrier.wait()
        start = time.monotonic()
        for _ in range(args.iterations):
            t0 = time.perf_counter()
            c.step()
            _sync(device)
            c.times.append(time.perf_counter() - t0)
        end = time.monotonic()
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
        wait = sum(m["data_wait_s"] for m in c.metrics) / max(sum(m["iter_time_s"] for m in c.metrics), 1e-9)
        results.put((index, start, end, c.times, peak, wait, None))
    except BaseException as e:  # reported by the parent
        barrier.abort()
        results.put((index, 0.0, 0.0, [], 0, 0.0, f"{type(e).__name__}: {e}"))


def run_trials(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    print(
        f"device={device} torch={torch.__version__} load_avg={os.getloadavg()[0]:.1f} config: frames={args.frames} "
        f"size={args.size} width={args.width} batch={args.batch} variant={args.variant} "
        f"bf16={args.bf16 and device.type == 'cuda'} iterations={args.iterations} per trial "
        f"data={args.data or 'pre-made pool'}"
    )
    ctx = mp.get_context("spawn")
    base = None
    print(f"{'trials':>6} {'s/iter per trial (median)':>26} {'iter/s together':>16} {'sum of trial iter/s':>20} "
          f"{'vs 1 trial':>10} {'peak GiB/trial':>14} {'data wait':>9}")
    for n in args.trial_counts:
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_trial, args=(args, i, n, barrier, results)) for i in range(n)]
        for p in procs:
            p.start()
        got = [results.get() for _ in procs]
        for p in procs:
            p.join()
        errors = [g[6] for g in got if g[6]]
        if errors:
            print(f"{n:6d} failed: {errors[0]}")
            continue
        window = max(g[2] for g in got) - min(g[1] for g in got)
        together = n * args.iterations / window
        summed = sum(args.iterations / (g[2] - g[1]) for g in got)
        base = base or (together if n == 1 else None)
        med = statistics.median(t for g in got for t in g[3])
        ratio = f"{together / base:9.3f}x" if base else f"{'':>10}"
        print(f"{n:6d} {med:26.3f} {together:16.3f} {summed:20.3f} {ratio} "
              f"{max(g[4] for g in got) / 2**30:14.2f} {100 * max(g[5] for g in got):8.2f}%", flush=True)
    print(f"load_avg at end={os.getloadavg()[0]:.1f} (iter/s together: all trials' iterations / the span from the "
          f"first start to the last end)")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.trials is not None:
        run_trials(args)
        return
    contenders = run(args)
    report(contenders, args)
    if args.profile:
        profile(contenders[0], args, pick_device(args.device))


if __name__ == "__main__":
    main()
