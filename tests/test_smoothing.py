"""The smoothed score schedulers decide on (eval.smoothing) and the spec keys of #11 (seeds, generator, bootstrap)."""

from __future__ import annotations

import math

import pytest

from tune_jobs.spec import SmoothingSpec, SpecError, parse_spec

BASE = {
    "name": "t",
    "datasets": [{"name": "d", "path": "data/none"}],
    "model": {"frames": 16, "size": 32, "width": 4, "z_dim": 8},
    "variants": ["gp"],
    "eval": {"every": 2, "n_real": 4, "n_fake": 4},
    "scheduler": {"max_t": 8, "grace_period": 2},
}


def test_rules() -> None:
    fvds = [900.0, 700.0, float("nan"), 800.0, 1000.0]
    assert SmoothingSpec(rule="mean_last", k=3).apply(fvds) == pytest.approx((700 + 800 + 1000) / 3)  # NaN skipped
    assert SmoothingSpec(rule="mean_last", k=3).apply(fvds[:1]) == 900.0  # fewer than k: all of them
    assert SmoothingSpec(rule="best_so_far").apply(fvds) == 700.0
    assert SmoothingSpec(rule="none").apply(fvds) == 1000.0
    assert math.isnan(SmoothingSpec().apply([]))


def test_spec_defaults_and_refusals() -> None:
    spec = parse_spec(BASE)
    assert (spec.eval.generator, spec.eval.scheduler_metric, spec.train.ema) == ("ema", "fvd_smooth", True)
    kvd = parse_spec({**BASE, "eval": {**BASE["eval"], "metric": "kvd"}})
    assert kvd.eval.scheduler_metric == "kvd_smooth"
    raw = parse_spec({**BASE, "train": {"ema": False}, "eval": {**BASE["eval"], "generator": "raw"}})
    assert raw.eval.generator == "raw"
    with pytest.raises(SpecError, match="train.ema"):
        parse_spec({**BASE, "train": {"ema": False}})
    with pytest.raises(SpecError, match="seeds"):
        parse_spec({**BASE, "seeds": [0, 0]})
    with pytest.raises(SpecError, match="bootstrap"):
        parse_spec({**BASE, "eval": {**BASE["eval"], "bootstrap": 5}})
    with pytest.raises(SpecError, match="rule"):
        parse_spec({**BASE, "eval": {**BASE["eval"], "smoothing": {"rule": "median"}}})
