"""The ``vidgan`` command: an argparse dispatcher whose subcommands live in their owning modules.

Each command module exposes ``add_parser(subparsers)``, which adds its subcommand and sets ``func``
(``args -> exit status``) as a default. The modules keep heavy imports (Ray, torch, MLflow) inside
``func``, so ``vidgan --help`` is fast and ``vidgan ingest`` never imports Ray Tune.
"""

from __future__ import annotations

import argparse
import sys

from tune_jobs import cli as sweep_cli
from vidgan import train_cli
from vidgan.fvd import cli as fvd_cli
from vidgan.ingest import cli as ingest_cli

COMMAND_MODULES = (ingest_cli, train_cli, fvd_cli, sweep_cli)  # ingest, train, fvd, sweep + demo


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="vidgan", description="Video GAN sweeps: data, training, FVD, Tune.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_parser(sub)
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
