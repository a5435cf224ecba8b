"""The ``vidgan`` console script: the library's subcommands (ingest, train, fvd) and the sweep service's
(sweep, demo, report, ui) in one command.

It lives here, above both packages, so that the library (``vidgan/``) imports nothing of ``tune_jobs``.
Every command module imports nothing heavy at import time, so ``vidgan --help`` stays fast.
"""

from __future__ import annotations

import sys

from tune_jobs import cli as sweep_cli
from tune_jobs import report_cli, ui_cli
from vidgan import cli as library_cli

COMMAND_MODULES = (*library_cli.LIBRARY_COMMANDS, sweep_cli, report_cli, ui_cli)  # + sweep, demo, report, ui


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vidgan`` console script."""
    return library_cli.main(argv, COMMAND_MODULES)


if __name__ == "__main__":
    sys.exit(main())
