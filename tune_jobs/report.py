"""The sweep's comparison table (like the paper's Table 1) and its FVD-against-iterations figure."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

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
    out = io.StringIO()
    keys = [k for k in asdict(rows[0]) if k != "curve"] if rows else []
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


def plot_curves(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path, metric: str = "fvd") -> Path:
    """One line per labelled curve of (generator iteration, metric) points, saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for label, curve in curves.items():
        xs, ys = zip(*curve, strict=True)
        ax.plot(xs, ys, marker="o", ms=3, label=label)
    ax.set_xlabel("generator iterations")
    ax.set_ylabel(metric.upper())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
