"""The library's command dispatcher: argparse subcommands that live in their owning modules.

Each command module exposes ``add_parser(subparsers)``, which adds its subcommand and sets ``func``
(``args -> exit status``) as a default. The modules keep heavy imports (Ray, torch, MLflow) inside
``func``, so ``vidgan --help`` is fast and ``vidgan ingest`` never imports Ray Tune.

The library imports nothing above it: the ``vidgan`` console script is :func:`tune_jobs.main.main`, which
hands this dispatcher the library's commands (:data:`LIBRARY_COMMANDS`) and the sweep service's.
``python -m vidgan.cli`` runs the library's commands alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from vidgan import train_cli
from vidgan.fvd import cli as fvd_cli
from vidgan.ingest import cli as ingest_cli

LIBRARY_COMMANDS: tuple[ModuleType, ...] = (ingest_cli, train_cli, fvd_cli)  # ingest, train, fvd


def build_parser(modules: Sequence[ModuleType] = LIBRARY_COMMANDS) -> argparse.ArgumentParser:
    """The top-level parser with the subcommands of ``modules``."""
    parser = argparse.ArgumentParser(prog="vidgan", description="Video GAN sweeps: data, training, FVD, Tune.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in modules:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None, modules: Sequence[ModuleType] = LIBRARY_COMMANDS) -> int:
    """Parse ``argv`` against the subcommands of ``modules`` and run the chosen one; its exit status."""
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
