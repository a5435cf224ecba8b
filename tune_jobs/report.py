"""The sweep's comparison table (like the paper's Table 1) and its FVD-against-iterations figure."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

#: how a trial ended (its MLflow tag ``vidgan.end`` and the table's "ended" column)
TrialEnd = Literal["completed", "stopped_by_asha", "failed", "diverged"]
TRIAL_ENDS: tuple[TrialEnd, ...] = get_args(TrialEnd)


@dataclass
class TrialRow:
    trial_id: str
    variant: str
    dataset: str
    seed: int
    status: TrialEnd
    best_fvd: float = math.nan
    final_fvd: float = math.nan
    final_kvd: float = math.nan
    kvd_stderr: float = math.nan
    iterations: int = 0  # generator iterations (= generator updates)
    critic_updates: int = 0
    paper_steps: int = 0  # critic + generator updates, as the paper counted "steps"
    params: str = ""
    reason: str = ""
    curve: list[tuple[int, float]] = field(default_factory=list, repr=False)


COLUMNS = [
    ("variant", "variant"),
    ("dataset", "dataset"),
    ("seed", "seed"),
    ("best_fvd", "best FVD"),
    ("final_fvd", "final FVD"),
    ("final_kvd", "final KVD"),
    ("kvd_stderr", "KVD s.e."),
    ("iterations", "G iterations"),
    ("critic_updates", "D updates"),
    ("paper_steps", "paper steps"),
    ("status", "ended"),
    ("params", "params"),
]


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}" if abs(value) < 1e-2 else f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"
    return str(value)


def sort_rows(rows: list[TrialRow]) -> list[TrialRow]:
    """Best first: by best FVD, trials without a score last."""
    return sorted(rows, key=lambda r: (math.isnan(r.best_fvd), r.best_fvd, r.variant))


def markdown(rows: list[TrialRow]) -> str:
    cols = [c for c in COLUMNS if c[0] != "params" or any(r.params for r in rows)]
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    for r in sort_rows(rows):
        lines.append("| " + " | ".join(_fmt(getattr(r, k)) for k, _ in cols) + " |")
    return "\n".join(lines)


def to_csv(rows: list[TrialRow]) -> str:
    """Best first, one line per trial; the variant and the FVD columns lead (what a CSV preview shows first)."""
    out = io.StringIO()
    keys = [k for k in asdict(rows[0]) if k != "curve"] if rows else []
    keys = sorted(keys, key=lambda k: (k != "variant", "fvd" not in k))  # stable: the others keep their order
    writer = csv.DictWriter(out, fieldnames=keys)
    writer.writeheader()
    for r in sort_rows(rows):
        writer.writerow({k: v for k, v in asdict(r).items() if k != "curve"})
    return out.getvalue()


def iterations_saved(rows: list[TrialRow], max_t: int) -> float:
    """Fraction of generator iterations early stopping saved against running every trial to max_t."""
    if not rows:
        return 0.0
    return 1.0 - sum(min(r.iterations, max_t) for r in rows) / (len(rows) * max_t)


def curves(rows: list[TrialRow]) -> dict[str, list[tuple[int, float]]]:
    """Each scored trial's curve, best trial first, labelled variant/dataset/seed (how it ended)."""
    return {f"{r.variant}/{r.dataset}/s{r.seed} ({r.status})": r.curve for r in sort_rows(rows) if r.curve}


def best_iteration(row: TrialRow) -> int | None:
    """The first evaluation at which the trial reached its best FVD (None: never scored)."""
    return next((i for i, f in row.curve if f == row.best_fvd), None)


ENDED_WORDS = {"completed": "completed", "stopped_by_asha": "stopped by ASHA", "failed": "failed",
               "diverged": "diverged", "running": "running"}


def trial_description(
    variant: str, dataset: str, seed: int, ended: str, iterations: int, best_fvd: float, best_at: int | None,
    reason: str = "", params: str = "",
) -> str:
    """A trial run's MLflow description (``mlflow.note.content``, Markdown): what it trained, how it ended."""
    text = f"**{variant}** on `{dataset}`, seed {seed}"
    if params:
        text += f" ({params})"
    text += f": {ENDED_WORDS.get(ended, ended)}" + (f" at iteration {iterations}" if iterations else "")
    if best_at is not None and not math.isnan(best_fvd):
        text += f"; best FVD {_fmt(best_fvd)} at iteration {best_at}"
    if reason:
        text += f".\n\n{reason}"
    return text + ("" if reason else ".")


def describe_row(row: TrialRow) -> str:
    """:func:`trial_description` of a row of the table."""
    return trial_description(row.variant, row.dataset, row.seed, row.status, row.iterations, row.best_fvd,
                             best_iteration(row), row.reason, row.params)


def sweep_description(rows: list[TrialRow], comparison_link: str = "comparison.md", best_model: str = "") -> str:
    """The parent run's MLflow description (Markdown): the winner (and any trial tied with it), the ranking
    by best FVD (the order of ``comparison.md`` and of the trial runs sorted by the metric ``best_fvd``),
    where the table is, and where the winner's generator is."""
    ranked = sort_rows(rows)
    counts = ", ".join(f"{sum(r.status == s for r in rows)} {ENDED_WORDS[s]}" for s in TRIAL_ENDS
                       if any(r.status == s for r in rows))
    scored = [r for r in ranked if not math.isnan(r.best_fvd)]
    if not scored:
        lines = [f"**No trial was scored** ({len(rows)} trials: {counts})."]
    else:
        win = scored[0]
        lines = [f"**Winner: {win.variant}** (best FVD {_fmt(win.best_fvd)} at iteration {best_iteration(win)}, "
                 f"`{win.dataset}`, seed {win.seed}, {ENDED_WORDS[win.status]}), of {len(rows)} trials: {counts}."]
        tied = [r for r in scored[1:] if r.best_fvd == win.best_fvd]
        if tied:
            names = ", ".join(f"{r.variant} (`{r.dataset}`, seed {r.seed})" for r in tied)
            lines.append(f"Tied with it: {names}.")
    lines.append(f"\nRanked by best FVD, lowest first, as in [comparison.md]({comparison_link}) (and comparison.csv, "
                 "fvd_vs_iterations.png) among this run's artifacts; sorting the trial runs by the metric `best_fvd` "
                 "gives the same order.")
    if best_model:
        lines.append(f"The winner's generator: `{best_model}` (`mlflow.pytorch.load_model`).")
    lines += ["", "| # | variant | dataset | seed | best FVD | at iteration | ended |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(ranked[:30], 1):
        at = best_iteration(r)
        lines.append(f"| {i} | {r.variant} | {r.dataset} | {r.seed} | {_fmt(r.best_fvd)} | "
                     f"{'-' if at is None else at} | {ENDED_WORDS[r.status]} |")
    return "\n".join(lines)


def curve_figure(curves: Mapping[str, Sequence[tuple[int, float]]], metric: str = "fvd") -> Any:
    """A matplotlib Figure with one line per labelled curve of (generator iteration, metric) points (for
    ``MlflowClient.log_figure``; made without pyplot, so nothing global is left open)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=110)
    ax = fig.subplots()
    for label, curve in curves.items():
        xs, ys = zip(*curve, strict=True)
        ax.plot(xs, ys, marker="o", ms=3, label=label)
    ax.set_xlabel("generator iterations")
    ax.set_ylabel(metric.upper())
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_curves(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path, metric: str = "fvd") -> Path:
    """:func:`curve_figure` saved as a PNG at ``path``."""
    curve_figure(curves, metric).savefig(path)
    return path
