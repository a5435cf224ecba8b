"""``python -m vidgan.loss_variants [--readme docs/concepts/variants.md]``: print the variants table, or rewrite it
in that page (the block between its markers)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidgan.loss_variants import markdown_table, replace_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidgan.loss_variants", description=__doc__)
    parser.add_argument("--readme", type=Path, metavar="PAGE",
                        help="rewrite the table block of this page in place (docs/concepts/variants.md)")
    args = parser.parse_args(argv)
    if args.readme is None:
        print(markdown_table())
        return 0
    args.readme.write_text(replace_table(args.readme.read_text()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
