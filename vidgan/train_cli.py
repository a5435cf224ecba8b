"""``vidgan train``: one training run on a shard directory, without Ray (pyarrow reader, core trainer)."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``vidgan train``."""
    p = subparsers.add_parser("train", help="train one iVGAN on a shard directory (no Ray)",
                              description="Single training run: stream clips from --data with pyarrow "
                              "and train with the core trainer; checkpoint, resume.")
    p.add_argument("--data", required=True, help="shard directory written by `vidgan ingest` (path or URI)")
    p.add_argument("--variant", default="gp", help="loss variant preset (vidgan.variants)")
    p.add_argument("--frames", type=int, default=None, help="clip frames (default: from the manifest)")
    p.add_argument("--size", type=int, default=None, help="clip size (default: from the manifest)")
    p.add_argument("--width", type=int, default=64, help="base channel width of the networks")
    p.add_argument("--iterations", type=int, default=100, help="train until this many iterations in total")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-critic", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda / cpu (default: CUDA when present)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file written at the end (and --save-every)")
    p.add_argument("--save-every", type=int, default=0, help="also checkpoint every N iterations (0: end only)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint when it exists")
    p.add_argument("--log-every", type=int, default=10)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train; print one JSON line of metrics every --log-every iterations."""
    from pathlib import Path

    from vidgan.config import ModelConfig, TrainConfig
    from vidgan.data import arrow_clip_batches, resume_seed
    from vidgan.shards import ManifestError, describe
    from vidgan.trainer import Trainer
    from vidgan.variants import get_variant

    try:
        shard_set = describe(args.data)
    except (FileNotFoundError, ManifestError) as e:
        print(f"vidgan train: error: {e}", file=sys.stderr)
        return 2
    t, h, w, _ = shard_set.clip_shape
    frames, size = args.frames or t, args.size or h
    if (frames, size) != (t, h) or h != w:
        print(f"vidgan train: error: {args.data} holds {t}x{h}x{w} clips, asked for {frames}x{size}x{size}",
              file=sys.stderr)
        return 2
    ckpt = Path(args.checkpoint) if args.checkpoint else None
    if args.resume and ckpt is not None and ckpt.exists():
        trainer = Trainer.load(ckpt, device=args.device)
    else:
        trainer = Trainer(
            ModelConfig(frames=frames, size=size, width=args.width),
            get_variant(args.variant),
            TrainConfig(batch_size=args.batch_size, n_critic=args.n_critic, lr=args.lr, seed=args.seed),
            device=args.device,
        )
    batches = arrow_clip_batches(args.data, trainer.train_cfg.batch_size, flip=True,
                                 seed=resume_seed(trainer.train_cfg.seed, trainer.iteration))
    while trainer.iteration < args.iterations:
        m = trainer.train_iteration(batches)
        if trainer.iteration % max(1, args.log_every) == 0 or trainer.iteration == args.iterations:
            print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in m.items()}), flush=True)
        if ckpt is not None and args.save_every and trainer.iteration % args.save_every == 0:
            trainer.save(ckpt)
    if ckpt is not None:
        trainer.save(ckpt)
    return 0
