"""The comparison over seeds (tune_jobs/report.py) on hand-made trial rows: means, t-intervals, Welch tests, ties."""

from __future__ import annotations

import csv
import io
import math

import pytest
from scipy import stats

from tune_jobs.report import TrialRow, aggregate, markdown_variants, variants_csv


def _rows(dataset: str, variant: str, fvds: list[float], status: str = "completed") -> list[TrialRow]:
    return [TrialRow(f"{variant}-{dataset}-{i}", variant, dataset, i, status, best_fvd=f) for i, f in enumerate(fvds)]


def _welch_p_by_hand(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    return float(2 * stats.t.sf(abs(t), df))


def test_means_intervals_welch_tests_and_tied_ranks() -> None:
    best, close, far = [100.0, 110.0, 120.0], [105.0, 125.0, 140.0], [300.0, 310.0, 330.0]
    rows = _rows("d", "gp", best) + _rows("d", "sn", close) + _rows("d", "r1", far, status="stopped_by_asha")
    table = {v.variant: v for v in aggregate(rows)}

    gp, sn, r1 = table["gp"], table["sn"], table["r1"]
    assert (gp.n_seeds, gp.fvd_mean, gp.fvd_sd) == (3, pytest.approx(110.0), pytest.approx(10.0))
    assert gp.fvd_ci95 == pytest.approx(stats.t.ppf(0.975, 2) * 10.0 / math.sqrt(3))  # 24.84
    assert gp.vs_best == "best" and math.isnan(gp.p_value)
    assert sn.p_value == pytest.approx(_welch_p_by_hand(best, close), rel=1e-9)
    assert sn.vs_best == "tied" and sn.p_value > 0.05
    assert r1.p_value == pytest.approx(_welch_p_by_hand(best, far), rel=1e-9)
    assert r1.vs_best == "worse" and r1.p_value < 0.05
    # rank = 1 + variants significantly better: gp and sn share rank 1; both beat r1
    assert (gp.rank, sn.rank, r1.rank) == (1, 1, 3)
    assert (r1.completed, r1.trials, gp.completed) == (0, 3, 3)
    assert [v.variant for v in aggregate(rows)] == ["gp", "sn", "r1"]


def test_unscored_trials_are_not_seeds_and_one_seed_cannot_be_told_apart() -> None:
    rows = (
        _rows("d", "gp", [100.0, 120.0])
        + [TrialRow("x", "gp", "d", 2, "diverged")]  # no FVD: not a seed of the mean
        + _rows("d", "sn", [400.0])
        + [TrialRow("y", "drift", "d", 0, "failed")]
    )
    table = {v.variant: v for v in aggregate(rows)}
    assert table["gp"].n_seeds == 2 and table["gp"].fvd_mean == pytest.approx(110.0) and table["gp"].trials == 3
    assert table["sn"].vs_best == "untested" and math.isnan(table["sn"].fvd_ci95)
    assert table["sn"].rank == 1  # one seed: no test can separate it from gp
    assert table["drift"].vs_best == "no score" and table["drift"].rank == 3


def test_datasets_are_compared_separately() -> None:
    rows = _rows("a", "gp", [100.0, 101.0, 102.0]) + _rows("a", "sn", [200.0, 201.0, 202.0])
    rows += _rows("b", "gp", [500.0, 510.0, 520.0]) + _rows("b", "sn", [50.0, 60.0, 55.0])
    out = aggregate(rows)
    assert [(v.dataset, v.variant, v.vs_best, v.rank) for v in out] == [
        ("a", "gp", "best", 1), ("a", "sn", "worse", 2), ("b", "sn", "best", 1), ("b", "gp", "worse", 2)
    ]


def test_tables_show_ties_intervals_and_the_test() -> None:
    rows = _rows("d", "gp", [100.0, 110.0, 120.0]) + _rows("d", "sn", [105.0, 125.0, 140.0])
    rows += _rows("d", "r1", [300.0, 310.0, 330.0])
    variants = aggregate(rows)
    md = markdown_variants(variants)
    assert "| 1= | gp | d | 3 | 110.0 +- 24.8 (100.0 to 120.0) | best | 3/3 |" in md
    assert "| 1= | sn |" in md and "tied (p=" in md and "| 3 | r1 |" in md and "worse (p=" in md
    assert "Welch" in md
    parsed = list(csv.DictReader(io.StringIO(variants_csv(variants))))
    assert {"variant", "dataset", "n_seeds", "fvd_mean", "fvd_ci95", "vs_best", "p_value", "rank"} <= set(parsed[0])
    assert parsed[0]["variant"] == "gp" and float(parsed[0]["fvd_ci95"]) == pytest.approx(24.84, abs=0.01)
    # two seeds: their range, not a t-interval 12.7 times their half-difference wide
    two = markdown_variants(aggregate(_rows("d", "gp", [4367.0, 6117.2]) + _rows("d", "sn", [4500.0, 6300.0])))
    assert "| 5242.1 (4367.0 to 6117.2) |" in two and "+-" not in two.split("\n\n")[0].split("\n", 2)[2]


def test_csv_says_for_two_seeds_what_the_table_says() -> None:
    """#31: comparison.csv gave fvd_ci95 2150.38 beside a mean of 517 and p_value nan where the table shows a range."""
    variants = aggregate(_rows("d", "gp", [348.0, 687.0]) + _rows("d", "sn", [637.0, 668.0]))
    md = markdown_variants(variants)
    parsed = {r["variant"]: r for r in csv.DictReader(io.StringIO(variants_csv(variants)))}
    gp, sn = parsed["gp"], parsed["sn"]
    assert "| 517.5 (348.0 to 687.0) | best |" in md
    assert (gp["fvd_mean"], gp["fvd_min"], gp["fvd_max"], gp["fvd_ci95"]) == ("517.5", "348.0", "687.0", "")
    assert gp["vs_best"] == "best" and gp["p_value"] == ""  # no test against itself: empty, not nan
    assert sn["fvd_ci95"] == "" and sn["vs_best"] == "tied" and 0 < float(sn["p_value"]) < 1
    assert f"p={float(sn['p_value']):.2g}" in md
    assert "nan" not in variants_csv(variants).lower()
    # three seeds: the interval the table prints
    three = {r["variant"]: r for r in csv.DictReader(io.StringIO(variants_csv(aggregate(
        _rows("d", "gp", [100.0, 110.0, 120.0])))))}
    assert float(three["gp"]["fvd_ci95"]) == pytest.approx(24.84, abs=0.01) and three["gp"]["fvd_min"] == "100.0"
