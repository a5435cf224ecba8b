"""``vidgan report [latest | NAME | RUN_ID]``: a sweep's comparison rebuilt from MLflow alone, for a sweep that
finished, was interrupted or is still running; ``--compare A B`` puts two sweeps side by side.

It prints the table a sweep prints at its end (the same code: :class:`tune_jobs.report.Comparison`) and with
``--out DIR`` writes it as Markdown and CSV, the FVD curves, and a self-contained HTML page with the sample
strips. Like every command module it imports nothing heavy at import time.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
from pathlib import Path

#: what ``--out`` writes for one sweep (beside report.TABLE_FILES) and for a comparison
REPORT_PAGE = "report.html"
COMPARE_FILES = ("compare.md", "compare.csv", "compare.html")


def _installed(name: str) -> bool:
    """Whether a package can be imported (found without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require_store(uri: str, user: str) -> None:
    """Refuse (``TrackingUnavailable``) a local SQLite store that a command which only reads or serves it (``user``:
    "a report only reads") must not create or change: a missing file (opening it would make an empty store), or an
    empty (0-byte) one, which holds no sweep and would get MLflow's tables written into it."""
    from tune_jobs import tracking

    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri[len("sqlite:///") :])
    if not path.is_file():
        raise tracking.TrackingUnavailable(f"no MLflow store at {uri} (give --tracking-uri, or run where the "
                                           "sweep's mlflow.db is)")
    if path.stat().st_size == 0:
        raise tracking.TrackingUnavailable(f"MLflow store {uri}: {path} is an empty file (0 bytes), not an MLflow "
                                           f"store: it holds no sweep; left untouched ({user})")


def _out_folder(out: str, names: tuple[str, ...], overwrite: bool) -> Path:
    """``out`` (made if missing), refusing to replace files of ours already there unless ``overwrite``."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"--out {out}: a file, not a folder")
    taken = [n for n in names if (folder / n).exists()]
    if taken and not overwrite:
        raise FileExistsError(f"--out {out} already holds {', '.join(taken)}; pass --overwrite to replace them")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_out(folder: Path, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` (name -> bytes) into ``folder``, each whole or not at all; when one cannot be written (a full
    disk), the files this run added are removed again and OSError says so in one line: a later run finds the folder
    as it was, with no half file it would refuse to replace."""
    from vidgan.files import atomic_write_bytes

    written: list[tuple[Path, bool]] = []  # (path, whether this run added it)
    for name, data in files.items():
        path = folder / name
        new = not path.exists()
        try:
            atomic_write_bytes(path, data)
        except OSError as e:
            for p, added in written:
                if added:
                    p.unlink(missing_ok=True)
            replaced = [p.name for p, added in written if not added]
            also = f" (already replaced: {', '.join(replaced)})" if replaced else ""
            raise OSError(e.errno, f"--out {folder}: could not write {name} ({e.strerror or e}); no file of this "
                          f"report was left there{also}") from None
        written.append((path, new))
    return [p for p, _ in written]


def sweep_page(record: object, uri: str, tmp: Path) -> str:
    """The self-contained HTML report of one sweep (:class:`tune_jobs.history.SweepRecord`)."""
    import html

    from tune_jobs import history, report, report_html, tracking
    from vidgan.files import redact_uri

    assert isinstance(record, history.SweepRecord)
    comparison = record.comparison()
    curves = report.plot_curves(report.curves(comparison.rows), tmp / "curves.png", record.metric)
    run_ids = history.trial_run_ids(uri, record)
    strips = history.sample_strips(uri, comparison.rows, run_ids, tmp / "strips")
    figures = []
    for row in report.sort_rows(comparison.rows):
        if row.trial_id in strips:
            step, path = strips[row.trial_id]
            figures.append((f"{row.variant} / {row.dataset} / seed {row.seed} ({report.ENDED_WORDS[row.status]}): "
                            f"samples at iteration {step}", path))
    real = history.sample_strips(uri, [report.TrialRow("real", "real", "", 0, "completed")],
                                 {"real": record.run_id}, tmp / "real")
    if "real" in real:
        figures.insert(0, ("real clips (the datasets)", real["real"][1]))
    link = tracking.run_url(uri, record.experiment_id, record.run_id)
    settings = ", ".join(f"{k} {record.setting(k)}" for k in ("n_fake", "n_real", "frames"))
    about = [f"Sweep <b>{html.escape(record.name)}</b>, parent run <code>{record.run_id}</code> "
             f"({html.escape(record.status.lower())}) in <code>{html.escape(redact_uri(uri))}</code>: "
             f"<a href=\"{html.escape(link)}\">open in MLflow</a>.",
             f"Evaluation: {html.escape(settings)}; up to {html.escape(record.params.get('max_t', '?'))} iterations."]
    overrides = record.tags.get("vidgan.overrides")
    if overrides:
        about.append(f"Started with the overrides <code>{html.escape(overrides)}</code>.")
    return report_html.page(f"vidgan sweep {record.name}", [
        ("Sweep", "".join(f"<p>{line}</p>" for line in about)),
        ("Comparison", report_html.markdown_to_html(comparison.table)),
        ("FVD against iterations", report_html.image_tag(curves, "FVD curves")),
        ("Samples", report_html.strips_html(figures)),
    ])


def _one(args: argparse.Namespace, uri: str, tmp: Path) -> None:
    from tune_jobs import history, report

    folder = _out_folder(args.out, (*report.TABLE_FILES, REPORT_PAGE), args.overwrite) if args.out else None
    record = history.read_sweep(uri, args.sweep, tmp)
    comparison = record.comparison()
    state = {"RUNNING": "running or interrupted", "FINISHED": "finished"}.get(record.status, record.status.lower())
    from tune_jobs.restarts import restart_line

    restarts = restart_line([c for r in record.rows for c in r.restart_causes])  # as `vidgan sweep` says it
    print(report.headline(record.name, comparison) + (f"; {restarts}" if restarts else "")
          + f" (parent run {record.run_id}, {state})")
    print(comparison.table)
    if folder is not None:
        files = {**report.table_files(comparison, record.metric), REPORT_PAGE: sweep_page(record, uri, tmp).encode()}
        print(f"\nwritten: {', '.join(str(p) for p in _write_out(folder, files))}")


def _compare(args: argparse.Namespace, uri: str, tmp: Path) -> None:
    from tune_jobs import history, report_html, sweep_compare

    folder = _out_folder(args.out, COMPARE_FILES, args.overwrite) if args.out else None
    a = history.read_sweep(uri, args.compare[0], tmp / "a")
    b = history.read_sweep(uri, args.compare[1], tmp / "b")
    text = sweep_compare.markdown(a, b)
    print(text)
    if folder is not None:
        title = f"vidgan sweeps {a.name} (A) and {b.name} (B)"
        page = report_html.page(title, [("Side by side", report_html.markdown_to_html(text))])
        files = {"compare.md": text + "\n", "compare.csv": sweep_compare.to_csv(a, b), "compare.html": page}
        written = _write_out(folder, {name: data.encode() for name, data in files.items()})
        print(f"\nwritten: {', '.join(str(p) for p in written)}")


def _report(args: argparse.Namespace) -> int:
    from vidgan.errors import fail

    if args.compare and args.sweep != "latest":
        return fail("report", "give one sweep, or two with --compare A B, not both")
    missing = [m for m in ("mlflow", "matplotlib") if not _installed(m)]
    if missing:
        return fail("report", f"{', '.join(missing)} not installed: pip install 'vidgan[sweep]'")
    from mlflow.exceptions import MlflowException

    from tune_jobs import history, tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr keeps to errors
    try:
        uri = tracking.resolve_tracking_uri(args.tracking_uri)
        require_store(uri, "a report only reads")
        tracking.check_tracking(uri)
        with tempfile.TemporaryDirectory(prefix="vidgan-report-") as tmp:
            (_compare if args.compare else _one)(args, uri, Path(tmp))
    except (history.SweepNotFound, tracking.TrackingUnavailable, OSError, MlflowException) as exc:
        return fail("report", exc)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="a sweep's comparison rebuilt from MLflow (finished, interrupted or running)")
    p.add_argument("sweep", nargs="?", default="latest",
                   help="latest (default: the sweep started last), a sweep's name, or its parent run id")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="two sweeps (latest, names or run ids) side by side, marking where N, frames or data differ")
    p.add_argument("--out", default=None,
                   help="also write the tables (Markdown, CSV), the curves and a self-contained HTML page here")
    p.add_argument("--overwrite", action="store_true", help="replace report files already in --out")
    p.set_defaults(func=_report)
