"""``vidgan sweep SPEC [key=value ...]`` and ``vidgan demo [key=value ...]``: run a sweep from a YAML spec, with
dotted-key overrides (:mod:`tune_jobs.overrides`), also as a Ray job entrypoint.

This module is imported by the ``vidgan`` command for every subcommand, so it imports nothing heavy at
import time: Ray, MLflow and Optuna (the ``vidgan[sweep]`` extra) are looked for only when a sweep runs,
and their absence is one line saying how to install them.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import time
from pathlib import Path

SPEC_DIR = Path(__file__).resolve().parent
DEMO_SPEC = SPEC_DIR / "demo.yaml"
#: what `vidgan sweep` imports beyond the core package (the `sweep` extra)
SWEEP_PACKAGES = ("ray", "mlflow", "optuna")

log = logging.getLogger("tune_jobs.cli")


def missing_sweep_packages() -> list[str]:
    """The packages of the ``vidgan[sweep]`` extra that are not installed (found without importing them)."""
    missing = []
    for name in SWEEP_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def setup_logging(verbose: int) -> None:
    """Log lines of the service (``tune_jobs``, ``vidgan``) go to stderr as ``[vidgan] message``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[vidgan] %(message)s"))
    for name in ("tune_jobs", "vidgan"):
        logger = logging.getLogger(name)
        if not any(getattr(h, "_vidgan", False) for h in logger.handlers):
            handler._vidgan = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if verbose > 2 else logging.INFO)
        logger.propagate = False


def _run(spec: str | Path, args: argparse.Namespace) -> int:
    missing = missing_sweep_packages()
    if missing:
        print(f"vidgan sweep: error: {', '.join(missing)} not installed (the sweep service needs Ray, MLflow and "
              "Optuna): pip install 'vidgan[sweep]'", file=sys.stderr)
        return 2
    setup_logging(args.verbose)
    from tune_jobs import overrides
    from tune_jobs.spec import SpecError, parse_spec, read_spec
    from vidgan.errors import fail

    start = time.perf_counter()
    given = tuple(args.overrides)
    try:  # the spec and its overrides first: a typo is reported before MLflow or Ray is imported
        raw = read_spec(spec)
        effective = overrides.apply(raw, given)
        parsed = parse_spec(effective, source=str(spec))
    except SpecError as exc:
        return fail("sweep", exc)
    from tune_jobs import plan
    from tune_jobs.tracking import TrackingUnavailable

    try:
        checked, lines = plan.check(parsed, address=args.address)
    except (SpecError, TrackingUnavailable) as exc:
        return fail("sweep", exc)
    if args.check:
        if given:
            print(overrides.diff(raw, effective, str(spec)))
        print("\n".join(lines))
        print("spec, datasets and MLflow OK; nothing started (drop --check to run it)")
        return 0
    for line in lines:
        log.info(line)
    from mlflow.exceptions import MlflowException

    try:
        from tune_jobs.sweep import run_sweep

        outcome = run_sweep(checked, address=args.address, name=args.name, resume=args.resume, verbose=args.verbose,
                            overrides=given)
    # OSError: a full disk, an unwritable storage path; MlflowException: the server refused (permissions, a
    # deleted experiment) where retrying cannot help
    except (SpecError, TrackingUnavailable, OSError, MlflowException) as exc:
        return fail("sweep", exc)
    except KeyboardInterrupt:  # before or after Tune, which handles Ctrl-C itself while trials run
        print("vidgan sweep: interrupted: finished trials and checkpoints are kept; `vidgan sweep SPEC --resume` "
              "continues the latest sweep of SPEC (--name NAME another one)", file=sys.stderr)
        return 130
    wall = time.perf_counter() - start
    from tune_jobs.report import Comparison, headline

    comparison = Comparison(outcome.rows, n_seeds=len(checked.seeds), variants=outcome.variants)
    counts = comparison.counts()
    restarts = outcome.restart_line()
    # `vidgan report` prints the same two from MLflow
    print("\n" + headline(outcome.name, comparison) + (f"; {restarts}" if restarts else ""))
    print(outcome.table)
    print(
        f"\nEarly stopping saved {outcome.iterations_saved:.0%} of the generator iterations of running every trial "
        f"to the end. Wall time {wall:.0f} s."
    )
    from tune_jobs.tracking import run_open_lines

    print(f"MLflow parent run {outcome.parent_run_id} in {outcome.tracking_uri}")
    print("\n".join(run_open_lines(outcome.tracking_uri, outcome.parent_run_id)))
    return 1 if counts["completed"] + counts["stopped_by_asha"] == 0 else 0


def _sweep(args: argparse.Namespace) -> int:
    return _run(args.spec, args)


def _demo(args: argparse.Namespace) -> int:
    return _run(DEMO_SPEC, args)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="change the spec with dotted keys, values read as YAML: train.lr=2e-4 seeds=[0,1] "
                   "variants=[gp,zero_gp] scheduler.max_t=400 (right after the spec, before any option; --check "
                   "prints the change)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray; 'auto' joins one)")
    p.add_argument("--name", default=None, help="sweep name (default: <spec name>-<timestamp>)")
    p.add_argument("--resume", action="store_true", help="resume the named (or latest) interrupted sweep")
    p.add_argument("-v", "--verbose", type=int, default=1, help="Tune verbosity 0-3 (default 1)")
    p.add_argument("--check", action="store_true",
                   help="validate the spec, datasets and MLflow target, print the plan and exit (0 ok, 2 not) "
                   "without starting Ray or a trial")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a sweep of loss variants described by a YAML spec")
    p.add_argument("spec", help="sweep spec YAML (e.g. tune_jobs/demo.yaml)")
    _common(p)
    p.set_defaults(func=_sweep)
    d = sub.add_parser("demo", help="the embedded demo: the squares, gp and sn x 2 seeds, ASHA, MLflow in ./mlflow.db")
    _common(d)
    d.set_defaults(func=_demo)
