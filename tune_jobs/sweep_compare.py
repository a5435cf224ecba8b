"""Two sweeps' variants side by side (``vidgan report --compare A B``), marking where their FVDs do not compare.

FVD depends strongly on the number of clips (``n_fake``, ``n_real``), on the frames scored and on the real
clips, so two sweeps' FVDs compare only where all of these agree: each difference is named above the table,
and every line it touches says so in its ``comparable`` column.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

from tune_jobs.history import SweepRecord
from tune_jobs.report import VariantRow, _fmt

#: the evaluation settings FVD is only comparable under
SETTINGS = ("n_fake", "n_real", "frames")


@dataclass
class SideBySide:
    """One (variant, dataset) in sweeps A and B."""

    variant: str
    dataset: str
    a: VariantRow | None
    b: VariantRow | None
    differs: list[str]  # what makes A's and B's FVD incomparable here (empty: comparable)

    @property
    def delta(self) -> float:
        """B's mean best FVD minus A's (NaN where either has none)."""
        if self.a is None or self.b is None:
            return math.nan
        return self.b.fvd_mean - self.a.fvd_mean


def differences(a: SweepRecord, b: SweepRecord) -> list[str]:
    """The evaluation settings that differ between the sweeps (``n_fake 16 != 4``)."""
    return [f"{k} {a.setting(k)} != {b.setting(k)}" for k in SETTINGS if a.setting(k) != b.setting(k)]


def dataset_difference(a: SweepRecord, b: SweepRecord, dataset: str) -> str:
    """'' when the dataset of this name is the same in both sweeps (its manifest's digest), else why not."""
    da, db = a.datasets.get(dataset), b.datasets.get(dataset)
    if da is None or db is None:
        return f"dataset {dataset} only in {'B' if da is None else 'A'}" if (da or db) else ""
    return "" if da == db else f"dataset {dataset} differs (manifest {da[:8]} != {db[:8]})"


def side_by_side(a: SweepRecord, b: SweepRecord) -> list[SideBySide]:
    """Every (variant, dataset) of either sweep, A's order first."""
    va = {(v.variant, v.dataset): v for v in a.comparison().variants}
    vb = {(v.variant, v.dataset): v for v in b.comparison().variants}
    settings = differences(a, b)
    out = []
    for key in dict.fromkeys([*va, *vb]):
        data = dataset_difference(a, b, key[1])
        out.append(SideBySide(key[0], key[1], va.get(key), vb.get(key), settings + ([data] if data else [])))
    return out


def _cell(v: VariantRow | None) -> str:
    if v is None or not v.n_seeds:
        return "-"
    ci = "" if math.isnan(v.fvd_ci95) else f" +- {v.fvd_ci95:.1f}"
    return f"{_fmt(v.fvd_mean)}{ci} ({v.n_seeds} seed{'s' if v.n_seeds > 1 else ''}, rank {v.rank})"


def markdown(a: SweepRecord, b: SweepRecord) -> str:
    """The comparison as Markdown: what differs, then one line per variant and dataset."""
    lines = [f"A: sweep {a.name} (run {a.run_id}, {a.status.lower()}); B: sweep {b.name} (run {b.run_id}, "
             f"{b.status.lower()})", ""]
    settings = differences(a, b)
    datasets = [d for d in dict.fromkeys(x.dataset for x in side_by_side(a, b)) if dataset_difference(a, b, d)]
    if settings or datasets:
        what = settings + [dataset_difference(a, b, d) for d in datasets]
        lines.append("**Not comparable where marked**: " + "; ".join(what) + ". FVD depends on the number of clips, "
                     "the frames scored and the real clips: compare FVDs only at equal N, frames and dataset.")
    else:
        lines.append(f"Same evaluation in both ({', '.join(f'{k} {a.setting(k)}' for k in SETTINGS)}) and the same "
                     "datasets: the FVDs compare.")
    lines += ["", "| variant | dataset | A: FVD mean +- 95% CI | B: FVD mean +- 95% CI | B - A | comparable |",
              "|" + "---|" * 6]
    for s in side_by_side(a, b):
        mark = "yes" if not s.differs else "no: " + "; ".join(s.differs)
        lines.append(f"| {s.variant} | {s.dataset} | {_cell(s.a)} | {_cell(s.b)} | {_fmt(s.delta)} | {mark} |")
    return "\n".join(lines)


def to_csv(a: SweepRecord, b: SweepRecord) -> str:
    """One line per variant and dataset: each sweep's mean, interval half-width, seeds and rank, B - A, and what
    makes them incomparable ('' when nothing)."""
    out = io.StringIO()
    keys = ["variant", "dataset", "a_fvd_mean", "a_fvd_ci95", "a_n_seeds", "a_rank", "b_fvd_mean", "b_fvd_ci95",
            "b_n_seeds", "b_rank", "delta", "not_comparable", "a_sweep", "b_sweep"]
    writer = csv.DictWriter(out, fieldnames=keys)
    writer.writeheader()
    for s in side_by_side(a, b):
        line = {"variant": s.variant, "dataset": s.dataset, "delta": s.delta, "not_comparable": "; ".join(s.differs),
                "a_sweep": a.name, "b_sweep": b.name}
        for side, v in (("a", s.a), ("b", s.b)):
            line.update({f"{side}_fvd_mean": v.fvd_mean if v else "", f"{side}_fvd_ci95": v.fvd_ci95 if v else "",
                         f"{side}_n_seeds": v.n_seeds if v else 0, f"{side}_rank": v.rank if v else ""})
        writer.writerow(line)
    return out.getvalue()
