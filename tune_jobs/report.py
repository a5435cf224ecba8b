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
#: a trial of a sweep read back from MLflow (``vidgan report``) that has not ended (yet): its sweep is running, or
#: was interrupted, or it was stopped by ASHA in a sweep that did not reach its end (MLflow cannot tell these apart)
UNFINISHED = "unfinished"
TrialStatus = TrialEnd | Literal["unfinished"]


def format_params(params: Mapping[str, Any]) -> str:
    """A trial's searched hyperparameters as the table's params column (``lr=0.0002, n_critic=5``)."""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


@dataclass
class TrialRow:
    trial_id: str
    variant: str
    dataset: str
    seed: int | str  # as logged: a text that is not an integer is shown as it is
    status: TrialStatus
    best_fvd: float = math.nan
    final_fvd: float = math.nan
    best_fvd_raw: float = math.nan  # the raw generator's best FVD (best_fvd is the moving average's, by default)
    best_fvd_ci_low: float = math.nan  # 95% bootstrap interval of the evaluation that gave best_fvd
    best_fvd_ci_high: float = math.nan
    final_kvd: float = math.nan
    kvd_stderr: float = math.nan
    iterations: int = 0  # generator iterations (= generator updates)
    critic_updates: int = 0
    paper_steps: int = 0  # critic + generator updates, as the paper counted "steps"
    params: str = ""
    reason: str = ""
    restarts: int = 0  # times Tune restarted the trial from its checkpoint (a lost or preempted node, an error)
    restart_causes: list[str] = field(default_factory=list, repr=False)  # each restart's cause (tune_jobs.restarts)
    curve: list[tuple[int, float]] = field(default_factory=list, repr=False)

    @property
    def best_fvd_ci(self) -> str:
        """The markdown table's "its 95% CI" column."""
        if math.isnan(self.best_fvd_ci_low):
            return "-"
        return f"{_fmt(self.best_fvd_ci_low)}-{_fmt(self.best_fvd_ci_high)}"


COLUMNS = [
    ("variant", "variant"),
    ("dataset", "dataset"),
    ("seed", "seed"),
    ("best_fvd", "best FVD"),
    ("best_fvd_ci", "its 95% CI"),
    ("best_fvd_raw", "best raw FVD"),
    ("final_fvd", "final FVD"),
    ("final_kvd", "final KVD"),
    ("kvd_stderr", "KVD s.e."),
    ("iterations", "G iterations"),
    ("critic_updates", "D updates"),
    ("paper_steps", "paper steps"),
    ("status", "ended"),
    ("restarts", "restarts"),
    ("params", "params"),
]


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}" if abs(value) < 1e-2 else f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"
    return str(value)


def parse_seed(value: object) -> int | str:
    """A trial's seed as logged (an MLflow param is text): the integer, or the text itself when it is none."""
    try:
        return int(str(value).strip())
    except ValueError:
        return str(value)


def seed_order(seed: int | str) -> tuple[int, int, str]:
    """A sort key of seeds: integers by value, then texts (a seed that is not an integer) by text."""
    return (0, seed, "") if isinstance(seed, int) else (1, 0, seed)


def scored(row: TrialRow) -> bool:
    """Whether the trial has a best FVD: a finite one (NaN is no score, and neither is an infinite FVD)."""
    return math.isfinite(row.best_fvd)


def sort_rows(rows: list[TrialRow]) -> list[TrialRow]:
    """Best first: by best FVD, trials without a score last; ties by variant, dataset, seed and trial id, so the
    order does not depend on the order the rows came in (Tune's results, MLflow's runs)."""
    return sorted(rows, key=lambda r: (not scored(r), r.best_fvd if scored(r) else 0.0, r.variant, r.dataset,
                                       seed_order(r.seed), r.trial_id))


def markdown(rows: list[TrialRow]) -> str:
    cols = [c for c in COLUMNS if c[0] not in ("params", "restarts") or any(getattr(r, c[0]) for r in rows)]
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


# ------------------------------------------------------------------------------------------ over seeds
ALPHA = 0.05  # the level of the Welch tests


@dataclass
class VariantRow:
    """One (variant, dataset) over its seeds: the mean of each trial's best FVD, a 95% t-interval half-width,
    and Welch's t-test against the best variant of the dataset (the lowest mean).

    ``rank`` = 1 + the number of variants of the dataset whose FVD is lower by a Welch test at 5%: variants
    no test can tell apart share a rank (with one seed no test is possible, so all share rank 1).
    ``vs_best``: ``best``, ``tied`` (p >= 0.05), ``worse`` (p < 0.05) or ``untested`` (a side with one seed).
    """

    variant: str
    dataset: str
    # scored trials: those with an FVD (a trial that failed or diverged after scoring counts with its best FVD
    # before it, from a finite checkpoint; the trial table's status says how it ended)
    n_seeds: int
    fvd_mean: float
    fvd_ci95: float  # half-width: t_{0.975, n-1} * sd / sqrt(n); NaN with one seed
    fvd_sd: float
    rank: int
    vs_best: str
    p_value: float  # Welch's two-sided p against the best variant; NaN for the best and when untested
    seeds: str = ""
    completed: int = 0  # trials that ran to max_t (the others were stopped by ASHA, failed or diverged)
    trials: int = 0
    values: list[float] = field(default_factory=list, repr=False)  # each seed's best FVD


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances); NaN when a side has fewer than 2 values or
    both have no spread."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    from scipy import stats

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def t_half_width(values: Sequence[float], level: float = 0.95) -> float:
    """Half-width of the t-interval of the mean of ``values`` (NaN for fewer than 2)."""
    n = len(values)
    if n < 2:
        return math.nan
    from scipy import stats

    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return float(stats.t.ppf(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n))


def aggregate(rows: list[TrialRow], alpha: float = ALPHA) -> list[VariantRow]:
    """Per (variant, dataset): each scored trial's best FVD summarised over seeds, tested against the best.
    Sorted by dataset, rank, mean."""
    groups: dict[tuple[str, str], list[TrialRow]] = {}
    for r in rows:
        groups.setdefault((r.dataset, r.variant), []).append(r)
    out: list[VariantRow] = []
    for dataset in sorted({d for d, _ in groups}):
        here = []
        for (d, variant), trials in sorted(groups.items()):
            if d != dataset:
                continue
            with_fvd = sorted((t for t in trials if scored(t)), key=lambda t: seed_order(t.seed))
            values = [t.best_fvd for t in with_fvd]
            n = len(values)
            mean = sum(values) / n if n else math.nan
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
            here.append(VariantRow(
                variant=variant, dataset=dataset, n_seeds=n, fvd_mean=mean, fvd_ci95=t_half_width(values),
                fvd_sd=sd, rank=0, vs_best="", p_value=math.nan, seeds=",".join(str(t.seed) for t in with_fvd),
                completed=sum(t.status == "completed" for t in trials), trials=len(trials), values=values,
            ))
        ranked = sorted((v for v in here if v.n_seeds), key=lambda v: (v.fvd_mean, v.variant))
        for v in ranked:
            better = [u for u in ranked if u.fvd_mean < v.fvd_mean and welch_p(u.values, v.values) < alpha]
            v.rank = 1 + len(better)
        if ranked:
            best = ranked[0]
            best.vs_best = "best"
            for v in ranked[1:]:
                v.p_value = welch_p(best.values, v.values)
                if math.isnan(v.p_value):
                    v.vs_best = "untested"
                else:
                    v.vs_best = "worse" if v.p_value < alpha else "tied"
        for v in here:
            if not v.n_seeds:
                v.rank, v.vs_best = len(ranked) + 1, "no score"
        out += sorted(here, key=lambda v: (v.rank, math.isnan(v.fvd_mean), v.fvd_mean, v.variant))
    return out


def _vs_best(v: VariantRow) -> str:
    if v.vs_best in ("worse", "tied"):
        return f"{v.vs_best} (p={v.p_value:.2g})"
    if v.vs_best == "untested":
        return "untested (1 seed)"
    return v.vs_best


def _mean_and_spread(v: VariantRow) -> str:
    """The mean of the seeds' best FVDs with its 95% interval from 3 seeds on, and the seeds' range. Two seeds give
    no interval worth printing (t = 12.7 at one degree of freedom: +- 12.7 x half their difference), so two show
    their range alone."""
    values = [x for x in v.values if x == x]
    if v.n_seeds <= 1 or len(values) < 2:
        return _fmt(v.fvd_mean)
    spread = f"({min(values):.1f} to {max(values):.1f})"
    if v.n_seeds == 2 or math.isnan(v.fvd_ci95):
        return f"{_fmt(v.fvd_mean)} {spread}"
    return f"{_fmt(v.fvd_mean)} +- {v.fvd_ci95:.1f} {spread}"


AGG_LEGEND = (
    "FVD: mean over seeds of each trial's best FVD, +- the half-width of its 95% t-interval from 3 seeds on, and in "
    "brackets the seeds' lowest and highest. Two seeds show their range alone: a t-interval from two values is "
    "12.7 times their half-difference each way, too wide to say anything; two seeds screen, three or more claim. "
    "vs best: Welch's "
    "t-test against the variant with the lowest mean, 5% level, two-sided p. rank: 1 + the number of variants "
    "with a lower FVD by that test; equal ranks are ties. ended: trials that ran to max_t / trials."
)


def markdown_variants(variants: list[VariantRow]) -> str:
    """The comparison over seeds (one line per variant and dataset), with its legend."""
    lines = ["| rank | variant | dataset | seeds | FVD mean +- 95% CI (seeds' range) | vs best | ended |",
             "|" + "---|" * 7]
    for v in variants:
        ci = _mean_and_spread(v)
        rank = f"{v.rank}=" if sum(u.rank == v.rank and u.dataset == v.dataset for u in variants) > 1 else str(v.rank)
        lines.append(f"| {rank} | {v.variant} | {v.dataset} | {v.n_seeds} | {ci} | {_vs_best(v)} | "
                     f"{v.completed}/{v.trials} |")
    return "\n".join(lines) + "\n\n" + AGG_LEGEND


def variants_csv(variants: list[VariantRow]) -> str:
    """comparison.csv: one line per (variant, dataset) over seeds; the variant and the FVD columns lead (what a CSV
    preview, e.g. MLflow's, shows first). It says what the printed table says: ``fvd_min``/``fvd_max`` are the seeds'
    range, ``fvd_ci95`` is empty where the table prints no interval (two seeds or fewer), and a value that is not
    there (``p_value`` of the best or of an untested variant) is empty, not ``nan``."""
    out = io.StringIO()
    keys = [k for k in VariantRow.__dataclass_fields__ if k != "values"]
    keys.insert(keys.index("fvd_ci95") + 1, "fvd_min")
    keys.insert(keys.index("fvd_min") + 1, "fvd_max")
    keys = sorted(keys, key=lambda k: (k != "variant", "fvd" not in k))  # stable: the others keep their order
    writer = csv.DictWriter(out, fieldnames=keys)
    writer.writeheader()
    for v in variants:
        values = [x for x in v.values if x == x]
        line = {k: getattr(v, k, "") for k in keys}
        line.update(fvd_min=min(values) if values else "", fvd_max=max(values) if values else "")
        if v.n_seeds <= 2:
            line["fvd_ci95"] = ""
        writer.writerow({k: "" if isinstance(x, float) and math.isnan(x) else x for k, x in line.items()})
    return out.getvalue()


def iterations_saved(rows: list[TrialRow], max_t: int) -> float:
    """Fraction of generator iterations early stopping saved against running to max_t every trial that completed
    or that the scheduler stopped. A failed, diverged or unfinished trial is left out: the iterations it lacks were
    not saved by early stopping."""
    counted = [r for r in rows if r.status in ("completed", "stopped_by_asha")]
    if not counted or max_t <= 0:
        return 0.0
    return 1.0 - sum(min(r.iterations, max_t) for r in counted) / (len(counted) * max_t)


def curves(rows: list[TrialRow]) -> dict[str, list[tuple[int, float]]]:
    """Each scored trial's curve, best trial first, labelled variant/dataset/seed (how it ended)."""
    return {f"{r.variant}/{r.dataset}/s{r.seed} ({r.status})": r.curve for r in sort_rows(rows) if r.curve}


def best_iteration(row: TrialRow) -> int | None:
    """The first evaluation at which the trial reached its best FVD (None: never scored)."""
    return next((i for i, f in row.curve if f == row.best_fvd), None)


ENDED_WORDS = {"completed": "completed", "stopped_by_asha": "stopped by ASHA", "failed": "failed",
               "diverged": "diverged", "running": "running", UNFINISHED: "not finished"}


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


def sweep_description(
    rows: list[TrialRow], comparison_link: str = "comparison.md", best_model: str = "",
    variants: Sequence[Any] | None = None, compare_link: str = "",
) -> str:
    """The parent run's MLflow description (Markdown): the winner and its ties, the ranking of the trials by
    best FVD (the order of the trial runs sorted by the metric ``best_fvd``), where the table is, and where
    the best trial's generator is.

    With ``variants`` (the comparison over seeds: rows with variant, dataset, n_seeds, fvd_mean, fvd_ci95,
    vs_best, p_value) the winner of each dataset is the variant of lowest mean best FVD and its ties are the
    variants a Welch test cannot tell from it; without, the trial of lowest best FVD and any of equal FVD."""
    ranked = sort_rows(rows)
    counts = ", ".join(f"{sum(r.status == s for r in rows)} {ENDED_WORDS[s]}" for s in (*TRIAL_ENDS, UNFINISHED)
                       if any(r.status == s for r in rows))
    with_fvd = [r for r in ranked if scored(r)]
    # the links first: MLflow folds a long description after its first lines ("Show more")
    links = [f"[The whole table (comparison.md)]({comparison_link})"]
    if compare_link:
        links.append(f"[Compare the trials]({compare_link})")
    lines: list[str] = [" | ".join(links), ""]
    over_seeds = [v for v in (variants or []) if v.n_seeds]
    for dataset in dict.fromkeys(v.dataset for v in over_seeds):
        here = [v for v in over_seeds if v.dataset == dataset]
        best = next((v for v in here if v.vs_best == "best"), here[0])
        line = (f"**Winner on `{dataset}`: {best.variant}** (mean best FVD {_mean_and_spread(best)} over "
                f"{best.n_seeds} seed{'s' if best.n_seeds > 1 else ''})")
        tied = [v for v in here if v.vs_best == "tied"]
        if tied:
            line += "; tied with it (Welch's t-test, p >= 0.05): " + ", ".join(
                f"{v.variant} (p={v.p_value:.2g})" for v in tied)
        untested = [v for v in here if v.vs_best == "untested"]
        if untested:
            line += "; untested against it (one seed): " + ", ".join(v.variant for v in untested)
        lines.append(line + ".")
    if not with_fvd:
        lines.append(f"**No trial was scored** ({len(rows)} trials: {counts}).")
    else:
        win = with_fvd[0]
        lines.append(f"**{'Best trial' if over_seeds else 'Winner'}: {win.variant}** (best FVD {_fmt(win.best_fvd)} at "
                     f"iteration {best_iteration(win)}, `{win.dataset}`, seed {win.seed}, {ENDED_WORDS[win.status]}), "
                     f"of {len(rows)} trials: {counts}.")
        tied = [r for r in with_fvd[1:] if r.best_fvd == win.best_fvd]
        if tied and not over_seeds:
            names = ", ".join(f"{r.variant} (`{r.dataset}`, seed {r.seed})" for r in tied)
            lines.append(f"Tied with it: {names}.")
    lines.append("\nThe whole table is comparison.md among this run's artifacts (with comparison.csv and "
                 "fvd_vs_iterations.png). The trials below are ranked by best FVD, lowest first, as the trial runs "
                 "sorted by their metric `best_fvd` are.")
    if compare_link:
        lines.append("Compare the trials: sorted by best FVD, their samples side by side with a step slider (a chart "
                     "card shows one run's image at a time; open it full screen for all of them side by side), best "
                     "FVD bars and FVD curves.")
    if best_model:
        lines.append(f"The best trial's generator: `{best_model}` (`mlflow.pytorch.load_model`).")
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
        if not curve:
            continue
        xs, ys = zip(*curve, strict=True)
        ax.plot(xs, ys, marker="o", ms=3, label=label)
    ax.set_xlabel("generator iterations")
    ax.set_ylabel(metric.upper())
    ax.grid(alpha=0.3)
    if any(curves.values()):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def curves_png(curves: Mapping[str, Sequence[tuple[int, float]]], metric: str = "fvd") -> bytes:
    """:func:`curve_figure` as the bytes of a PNG."""
    buf = io.BytesIO()
    curve_figure(curves, metric).savefig(buf, format="png")
    return buf.getvalue()


def plot_curves(curves: Mapping[str, Sequence[tuple[int, float]]], path: Path, metric: str = "fvd") -> Path:
    """:func:`curve_figure` saved as a PNG at ``path``, whole or not at all."""
    from vidgan.files import atomic_write_bytes

    return atomic_write_bytes(path, curves_png(curves, metric))


# ------------------------------------------------------------------------------------------ the sweep's tables
#: the files :func:`write_tables` writes (the parent run's artifacts, and what ``vidgan report --out`` adds to)
TABLE_FILES = ("comparison.md", "comparison.csv", "trials.csv", "fvd_vs_iterations.png")


@dataclass
class Comparison:
    """A sweep's trials and their comparison over seeds: the end-of-sweep table and ``vidgan report``'s."""

    rows: list[TrialRow]
    n_seeds: int  # seeds per variant in the spec
    variants: list[VariantRow] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.variants:
            self.variants = aggregate(self.rows)

    @property
    def table(self) -> str:
        """The comparison over seeds, then the trials (Markdown): what a sweep prints at its end."""
        return (f"Over seeds ({self.n_seeds} per variant):\n\n" + markdown_variants(self.variants)
                + "\n\nTrials:\n\n" + markdown(self.rows))

    def counts(self) -> dict[str, int]:
        """Trials by how they ended (``unfinished`` only when some are)."""
        counts = {s: sum(r.status == s for r in self.rows) for s in TRIAL_ENDS}
        unfinished = sum(r.status == UNFINISHED for r in self.rows)
        return {**counts, UNFINISHED: unfinished} if unfinished else counts


def headline(name: str, comparison: Comparison) -> str:
    """``Sweep NAME: 6 trials, 3 completed, 3 stopped_by_asha, ...``: the line above the table."""
    counts = comparison.counts()
    return f"Sweep {name}: {len(comparison.rows)} trials, " + ", ".join(f"{v} {k}" for k, v in counts.items())


def table_files(comparison: Comparison, metric: str = "fvd") -> dict[str, bytes]:
    """The contents of :data:`TABLE_FILES` by name: the table (Markdown), the comparison over seeds and the trials
    (CSV), and the FVD curves (PNG)."""
    return {"comparison.md": (comparison.table + "\n").encode(),
            "comparison.csv": variants_csv(comparison.variants).encode(),
            "trials.csv": to_csv(comparison.rows).encode(),
            "fvd_vs_iterations.png": curves_png(curves(comparison.rows), metric)}


def write_tables(comparison: Comparison, folder: Path, metric: str = "fvd") -> list[Path]:
    """:func:`table_files` into ``folder``, each file whole or not at all (a full disk leaves no half file)."""
    from vidgan.files import atomic_write_bytes

    return [atomic_write_bytes(Path(folder) / name, data) for name, data in table_files(comparison, metric).items()]
