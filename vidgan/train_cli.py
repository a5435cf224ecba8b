"""``vidgan train``: one training run on a shard directory, without Ray (pyarrow reader, core trainer)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidgan.trainer import Trainer


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``vidgan train``."""
    p = subparsers.add_parser("train", help="train one iVGAN on a shard directory (no Ray)",
                              description="Single training run: stream clips from --data with pyarrow "
                              "and train with the core trainer; checkpoint, resume.")
    p.add_argument("--data", required=True, help="shard directory written by `vidgan ingest` (path or URI)")
    # None defaults: a flag the user gave is told apart from its default (with --resume, given flags must
    # agree with the checkpoint); fresh_defaults() fills them for a new run with the library's defaults
    # (ModelConfig, TrainConfig), which the help texts quote.
    p.add_argument("--variant", default=None, help="loss variant preset (vidgan.variants; default gp)")
    p.add_argument("--frames", type=int, default=None, help="clip frames (default: from the manifest)")
    p.add_argument("--size", type=int, default=None, help="clip size (default: from the manifest)")
    p.add_argument("--width", type=int, default=None, help="base channel width of the networks (default 64)")
    p.add_argument("--iterations", type=int, default=100, help="train until this many iterations in total")
    p.add_argument("--batch-size", type=int, default=None, help="clips per batch (default 64)")
    p.add_argument("--n-critic", type=int, default=None,
                   help="critic updates per iteration (default 1, the critic's lr 4x the generator's)")
    p.add_argument("--lr", type=float, default=None, help="the generator's Adam learning rate (default 1e-4)")
    p.add_argument("--seed", type=int, default=None, help="seed of the weights, noise and data order (default 0)")
    p.add_argument("--device", default=None, help="cuda / cpu (default: CUDA when present)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file written at the end (and --save-every)")
    p.add_argument("--save-every", type=int, default=0, help="also checkpoint every N iterations (0: end only)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue from --checkpoint when it exists (given flags must match it)")
    mode.add_argument("--overwrite", action="store_true", help="start a new run even if --checkpoint exists, "
                      "replacing it (without --resume or --overwrite an existing checkpoint is an error)")
    p.add_argument("--log-every", type=int, default=10)
    p.set_defaults(func=run)


def fresh_defaults() -> dict[str, object]:
    """What a new run trains with for each flag not given: the library's defaults (ModelConfig, TrainConfig),
    so that `vidgan train` and a sweep with the same settings train the same thing."""
    from vidgan.config import ModelConfig, TrainConfig

    m, t = ModelConfig.model_fields, TrainConfig.model_fields
    return {"variant": "gp", "width": m["width"].default, "batch_size": t["batch_size"].default,
            "n_critic": t["n_critic"].default, "lr": t["lr"].default, "seed": t["seed"].default}


class UsageError(ValueError):
    """Flags that cannot run together (or with the files they name)."""


def _check_device(device: str | None) -> None:
    """A --device that names no device, or a GPU this machine lacks, is a usage error (not a traceback)."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UsageError(f"--device {device!r} is not a device (e.g. cpu, cuda, cuda:1)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: this machine has no CUDA device that PyTorch can use")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def run(args: argparse.Namespace) -> int:
    """Train; print one JSON line of metrics every --log-every iterations. Exit status 2 with one line on
    stderr for bad data, manifests, checkpoints and flags."""
    import pyarrow as pa

    from vidgan.errors import fail

    run = Run()
    try:
        return _locked(args, run)
    except (ValueError, OSError, pa.ArrowException) as e:  # ManifestError, ShardError, CheckpointError, WriterBusy
        return fail("train", e)
    except KeyboardInterrupt:
        print(f"vidgan train: interrupted{run.where()}: {run.kept()}", file=sys.stderr)
        return 130


class Run:
    """How far a ``vidgan train`` got, for the line that ends it early (Ctrl-C, a failed save)."""

    def __init__(self) -> None:
        self.checkpoint: str | None = None  # a local path or a URI (vidgan.storage)
        self.trainer: Trainer | None = None
        self.saved: int | None = None  # iteration of the checkpoint file as it is now (None: not ours, or none)

    def where(self) -> str:
        return f" at iteration {self.trainer.iteration}" if self.trainer is not None else ""

    def kept(self) -> str:
        from vidgan import storage

        if self.checkpoint is None:
            return "no --checkpoint, nothing was kept"
        ckpt = storage.redact_uri(self.checkpoint)
        try:
            there = storage.is_file(self.checkpoint)
        except OSError:
            return f"checkpoint {ckpt} could not be looked at"
        if self.saved is not None and there:
            return (f"checkpoint {ckpt} (iteration {self.saved}) is kept: the same command with --resume "
                    "continues from it")
        if there:
            return f"checkpoint {ckpt} is as it was before this run"
        return f"no checkpoint was written to {ckpt}"


def _save(trainer: Trainer, ckpt: str, run: Run) -> None:
    """Save a checkpoint; a failure (a full disk) is one OSError saying what was kept and how to go on."""
    import errno
    import shutil

    from vidgan.files import ClaimLost

    try:
        trainer.save(ckpt)
    except ClaimLost:  # its lock file was removed and another writer may own ckpt now: its own line says so
        raise
    except (OSError, RuntimeError) as e:  # torch reports a failed write as "RuntimeError: ... unexpected pos"
        from vidgan import storage

        need = sum(t.numel() * t.element_size() for t in _tensors(trainer.state_dict()))
        try:
            free = None if storage.is_remote(ckpt) else shutil.disk_usage(Path(ckpt).parent).free
        except OSError:
            free = None
        full = getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < need)
        if full:
            reason = (f"the disk is full ({(free or 0) / 2**20:.1f} MiB free in {Path(ckpt).parent}, the checkpoint "
                      f"needs about {need / 2**20:.1f} MiB)")
        else:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise OSError(f"could not save checkpoint {storage.redact_uri(ckpt)} at iteration {trainer.iteration}: "
                      f"{reason}; {run.kept()}") from None
    run.saved = trainer.iteration


def _tensors(value: object) -> list:
    import torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    return []


def _locked(args: argparse.Namespace, run: Run) -> int:
    """:func:`_run` holding the checkpoint's writer lock: one ``vidgan train`` per checkpoint at a time (a second
    one stops naming the first), and the temporary files of a save that a killed run left are removed."""
    from vidgan import storage

    if not args.checkpoint:
        return _run(args, run)
    here = storage.local_path(args.checkpoint)
    if args.resume and not storage.is_remote(args.checkpoint) and os.path.islink(here) and os.path.isfile(here):
        # --resume through a symbolic link to a checkpoint: save to (and claim) the file it names; the link stays
        args.checkpoint = os.path.realpath(here)
    ckpt = run.checkpoint = args.checkpoint
    # on an object store: an unwritable scheme, a missing bucket or a denied write is one line, before anything
    storage.probe_writable(storage.parent_and_name(ckpt)[0], "--checkpoint")
    advice = "wait for it to finish (or stop it), or train into another --checkpoint"
    with storage.claim(ckpt, command="vidgan train", advice=advice):
        stale = storage.remove_stale_temps(ckpt)
        if stale:
            print(f"vidgan train: removed {len(stale)} temporary file(s) of an interrupted save of "
                  f"{storage.redact_uri(ckpt)}: {', '.join(stale)}", file=sys.stderr)
        return _run(args, run)


def resume_conflicts(args: argparse.Namespace, trainer: Trainer) -> list[str]:
    """The flags given explicitly (not None) whose value differs from the checkpoint's."""
    m, tc = trainer.model_cfg, trainer.train_cfg
    saved = {"--variant": (args.variant, trainer.variant.name), "--width": (args.width, m.width),
             "--frames": (args.frames, m.frames), "--size": (args.size, m.size),
             "--batch-size": (args.batch_size, tc.batch_size), "--n-critic": (args.n_critic, tc.n_critic),
             "--lr": (args.lr, tc.lr), "--seed": (args.seed, tc.seed)}
    return [f"{flag} {given} (checkpoint: {kept})" for flag, (given, kept) in saved.items()
            if given is not None and given != kept]


def _run(args: argparse.Namespace, run: Run) -> int:
    from vidgan import storage
    from vidgan.config import ModelConfig, TrainConfig
    from vidgan.data import arrow_clip_batches, resume_seed
    from vidgan.errors import fail
    from vidgan.files import redact_uri
    from vidgan.shards import verified

    ckpt: str | None = args.checkpoint or None
    if args.resume and ckpt is None:
        raise UsageError("--resume needs --checkpoint")
    ckpt_exists = ckpt is not None and storage.exists(ckpt)
    if ckpt_exists and not (args.resume or args.overwrite):
        raise UsageError(f"checkpoint {redact_uri(ckpt)} exists: pass --resume to continue it, or --overwrite to "
                         "replace it with a new run")
    shard_set = verified(args.data)  # sizes and sha256 of every shard, before any training
    t, h, w, _ = shard_set.clip_shape

    resuming = args.resume and ckpt_exists
    if not resuming:  # flags checked before torch is imported: a typo fails at once
        from vidgan.variants import get_variant

        defaults = fresh_defaults()
        opt = {k: default if getattr(args, k) is None else getattr(args, k) for k, default in defaults.items()}
        frames, size = args.frames or t, args.size or h
        if (frames, size) != (t, h) or h != w:
            raise UsageError(f"{redact_uri(args.data)} holds {t}x{h}x{w} clips, asked for {frames}x{size}x{size}")
        configs = (ModelConfig(frames=frames, size=size, width=opt["width"]), get_variant(opt["variant"]),
                   TrainConfig(batch_size=opt["batch_size"], n_critic=opt["n_critic"], lr=opt["lr"], seed=opt["seed"]))

    from vidgan.trainer import Trainer, TrainingDiverged, TrainingOutOfMemory

    _check_device(args.device)
    if resuming:
        trainer = run.trainer = Trainer.load(ckpt, device=args.device)
        run.saved = trainer.iteration
        conflicts = resume_conflicts(args, trainer)
        if conflicts:
            raise UsageError(f"--resume of {redact_uri(ckpt)}: {'; '.join(conflicts)}. Leave these flags out to "
                             "continue the checkpoint as it was, or pass --overwrite instead of --resume for a new run")
        kept = trainer.model_cfg
        if (kept.frames, kept.size, kept.size) != (t, h, w):
            raise UsageError(f"{redact_uri(args.data)} holds {t}x{h}x{w} clips, checkpoint {redact_uri(ckpt)} trains "
                             f"{kept.frames}x{kept.size}x{kept.size}")
        if trainer.iteration > args.iterations:
            raise UsageError(f"--resume of {redact_uri(ckpt)}: it is at iteration {trainer.iteration}, past "
                             f"--iterations {args.iterations} (the total to train to): nothing to train; pass "
                             f"--iterations above {trainer.iteration}")
    else:
        trainer = run.trainer = Trainer(*configs, device=args.device)
    batches = arrow_clip_batches(args.data, trainer.train_cfg.batch_size, flip=True,
                                 seed=resume_seed(trainer.train_cfg.seed, trainer.iteration))
    while trainer.iteration < args.iterations:
        try:
            m = trainer.train_iteration(batches)
        except (TrainingDiverged, TrainingOutOfMemory) as e:  # the last checkpoint written stays as it was
            return fail("train", e)
        if trainer.iteration % max(1, args.log_every) == 0 or trainer.iteration == args.iterations:
            print(json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in m.items()}), flush=True)
        if ckpt is not None and args.save_every and trainer.iteration % args.save_every == 0:
            _save(trainer, ckpt, run)
    if ckpt is not None and run.saved != trainer.iteration:
        _save(trainer, ckpt, run)
    return 0
