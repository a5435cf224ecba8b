"""``vidgan sweep SPEC`` and ``vidgan demo``: run a sweep from a YAML spec (also as a Ray job entrypoint)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SPEC_DIR = Path(__file__).resolve().parent
DEMO_SPEC = SPEC_DIR / "demo.yaml"


def _run(spec: str | Path, args: argparse.Namespace) -> int:
    from tune_jobs.spec import SpecError
    from tune_jobs.tracking import TrackingUnavailable

    start = time.perf_counter()
    try:
        from tune_jobs.sweep import run_sweep

        outcome = run_sweep(spec, address=args.address, name=args.name, resume=args.resume, verbose=args.verbose)
    except (SpecError, TrackingUnavailable) as exc:
        print(f"vidgan sweep: error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - start
    from tune_jobs.report import TRIAL_ENDS

    counts = {s: sum(r.status == s for r in outcome.rows) for s in TRIAL_ENDS}
    print(f"\nSweep {outcome.name}: {len(outcome.rows)} trials, " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    print(outcome.table)
    print(
        f"\nEarly stopping saved {outcome.iterations_saved:.0%} of the generator iterations of running every trial "
        f"to the end. Wall time {wall:.0f} s."
    )
    print(f"MLflow parent run {outcome.parent_run_id} in {outcome.tracking_uri}")
    if outcome.tracking_uri.startswith("sqlite:///"):
        print(f"Open it with:  mlflow ui --backend-store-uri {outcome.tracking_uri}   (http://127.0.0.1:5000)")
    return 1 if counts["completed"] + counts["stopped_by_asha"] == 0 else 0


def _sweep(args: argparse.Namespace) -> int:
    return _run(args.spec, args)


def _demo(args: argparse.Namespace) -> int:
    return _run(DEMO_SPEC, args)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray; 'auto' joins one)")
    p.add_argument("--name", default=None, help="sweep name (default: <spec name>-<timestamp>)")
    p.add_argument("--resume", action="store_true", help="resume the named (or latest) interrupted sweep")
    p.add_argument("-v", "--verbose", type=int, default=1, help="Tune verbosity 0-3 (default 1)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a sweep of loss variants described by a YAML spec")
    p.add_argument("spec", help="sweep spec YAML (e.g. tune_jobs/demo.yaml)")
    _common(p)
    p.set_defaults(func=_sweep)
    d = sub.add_parser("demo", help="the embedded demo: sample videos, every variant, CPU trials, ASHA, MLflow")
    _common(d)
    d.set_defaults(func=_demo)
