"""The ``vidgan`` command: an argparse dispatcher whose subcommands live in their owning modules.

Each module in :data:`COMMAND_MODULES` exposes ``add_parser(subparsers)``, which adds its subcommand and
sets ``func`` (``args -> exit status``) as a default. Adding a subcommand is one line here. Modules
are imported when the parser is built, so they must keep heavy imports (Ray, torch) inside ``func``;
a listed module that does not exist yet (``vidgan.fvd.cli`` until it lands) is left out by design, and
one that fails to import is reported on stderr and left out.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES: list[str] = [
    "vidgan.ingest.cli",  # ingest
    "vidgan.train_cli",  # train
    "vidgan.fvd.cli",  # fvd
    "tune_jobs.cli",  # sweep, demo
]


def _load(name: str):
    """Import a command module; None when it does not exist, or (with a warning) when it is broken.

    A module that is absent (not written yet) is left out silently. One that exists but fails to
    import is reported on stderr and left out, so one broken subcommand does not disable the others.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            return None
        err: Exception = e
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        err = e
    print(f"vidgan: warning: subcommands of {name} unavailable: {type(err).__name__}: {err}", file=sys.stderr)
    return None


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(prog="vidgan", description="Video GAN sweeps: data, training, FVD, Tune.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        mod = _load(name)
        if mod is not None:
            mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vidgan`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
