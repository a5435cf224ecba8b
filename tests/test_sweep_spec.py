"""Sweep specs are validated before anything starts; every shipped spec parses."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import yaml

from tune_jobs.spec import SpecError, load_spec, parse_spec
from tune_jobs.sweep import define_by_run, run_sweep
from tune_jobs.tracking import TrackingUnavailable, resolve_tracking_uri

SPECS = Path(__file__).resolve().parents[1] / "tune_jobs"

BASE = {
    "name": "t",
    "datasets": [{"name": "d", "path": "data/none"}],
    "model": {"frames": 16, "size": 32, "width": 4, "z_dim": 8},
    "train": {"batch_size": 2},
    "variants": ["gp", "sn"],
    "eval": {"every": 2, "n_real": 4, "n_fake": 4, "frames": 16},
    "scheduler": {"max_t": 8, "grace_period": 2},
    "resources": {"cpu": 1},
}


def _with(path: str, value: object) -> dict:
    spec = copy.deepcopy(BASE)
    *keys, last = path.split(".")
    node = spec
    for k in keys:
        node = node[k]
    node[last] = value
    return spec


@pytest.mark.parametrize("name", ["demo.yaml", "paper.yaml", "search.yaml"])
def test_shipped_specs_are_valid(name: str) -> None:
    spec = load_spec(SPECS / name)
    assert spec.variants


def test_demo_uses_the_gpus_ray_sees_and_search_tries_the_presets_first() -> None:
    assert load_spec(SPECS / "demo.yaml").resources.gpu == "auto"
    search = load_spec(SPECS / "search.yaml").search
    assert search is not None and search.points_to_evaluate == "presets" and search.storage is None


def test_pbt_needs_one_variant_and_refuses_mutating_a_term_the_variant_lacks() -> None:
    pbt = {"type": "pbt", "max_t": 8, "perturbation_interval": 2, "mutations": {"lr": {"low": 1e-5, "high": 1e-3}}}
    spec = parse_spec({**BASE, "variants": ["gp"], "scheduler": pbt})
    assert spec.scheduler.type == "pbt" and spec.scheduler.population == 4
    no_penalty = {**pbt, "mutations": {"penalty_weight": {"low": 1.0, "high": 20.0}}}
    with pytest.raises(SpecError, match="has no such term"):
        parse_spec({**BASE, "variants": ["sn"], "scheduler": no_penalty})
    with pytest.raises(SpecError, match="multiple of eval.every"):
        parse_spec({**BASE, "variants": ["gp"], "scheduler": {**pbt, "perturbation_interval": 3}})


def test_paper_spec_is_the_paper_experiment() -> None:
    spec = load_spec(SPECS / "paper.yaml")
    assert sorted(spec.variants) == sorted(["gp", "sn_gp", "sn", "zero_gp", "one_sided", "drift"])
    assert {d.name for d in spec.datasets} == {"golf", "beach"}
    assert (spec.model.frames, spec.model.size, spec.train.batch_size) == (32, 64, 64)
    assert 0 < spec.resources.gpu <= 1
    # the paper's networks, not vidgan's defaults: zero-padded deconvolutions, no minibatch deviation, and a
    # layer norm in every critic but SN-GP's
    assert (spec.model.edges, spec.model.minibatch_std) == ("zero", 0)
    assert (spec.train.lr, spec.train.betas, spec.train.n_critic) == (1e-4, (0.5, 0.999), 5)
    assert {v: spec.variant(v).layer_norm for v in spec.variants} == {
        "gp": True, "sn_gp": False, "sn": True, "zero_gp": True, "one_sided": True, "drift": True}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("variants", ["gp", "wgan_clip"], "unknown variant"),
        ("bogus_key", 1, "bogus_key"),
        ("eval.frames", 8, "eval.frames"),
        ("eval.every", 4, "grace_period"),
        ("scheduler.grace_period", 20, "grace_period"),
        ("resources.gpu", 1.5, "gpu"),
        ("train.lr", -1.0, "train.lr"),
        ("model.frames", 24, "model.frames"),
        ("search", {"num_samples": 2, "space": {"lr": {"low": 1e-3, "high": 1e-4}}}, "bad range"),
        ("search", {"num_samples": 2, "space": {"momentum": {"low": 0.1, "high": 0.2}}}, "momentum"),
        ("search", {"num_samples": 2, "space": {"lr": {"low": 0.0, "high": 0.1, "log": True}}}, "log range"),
        ("overrides", {"r1": {"penalty_weight": 1.0}}, "does not run"),
        ("overrides", {"gp": {"penalty": "zero_centered"}}, "overrides"),
        ("resources.gpu", "some", "gpu"),
        ("scheduler", {"max_t": 8, "perturbation_interval": 2}, "only apply to type: pbt"),
        ("scheduler", {"type": "pbt", "max_t": 8, "mutations": {"lr": {"low": 1e-5, "high": 1e-3}}},
         "perturbation_interval"),
        ("scheduler", {"type": "pbt", "max_t": 8, "perturbation_interval": 2}, "needs mutations"),
        ("scheduler", {"type": "pbt", "max_t": 8, "perturbation_interval": 2,
                       "mutations": {"width": {"low": 1, "high": 3}}}, "unknown PBT mutation"),
        ("scheduler", {"type": "pbt", "max_t": 8, "perturbation_interval": 2,
                       "mutations": {"beta1": {"low": 0.5, "high": 1.5}}}, "beta1"),
        ("scheduler", {"type": "pbt", "max_t": 8, "perturbation_interval": 2,
                       "mutations": {"lr": {"low": 1e-5, "high": 1e-3}}}, "one variant on one dataset"),
        ("search", {"num_samples": 2, "space": {"lr": {"low": 1e-5, "high": 1e-3}},
                    "points_to_evaluate": [{"n_critic": 2}]}, "not in the search space"),
        ("search", {"num_samples": 2, "space": {"lr": {"low": 1e-5, "high": 1e-3}}, "points_to_evaluate": "best"},
         "points_to_evaluate"),
    ],
)
def test_bad_specs_are_refused_with_the_key_named(path: str, value: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(_with(path, value))


def test_missing_dataset_is_refused_before_anything_runs(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump(BASE))
    with pytest.raises(SpecError, match="no shard directory"):
        run_sweep(spec_file)
    assert not (tmp_path / "results").exists()  # no Tune experiment was created


def test_unreachable_mlflow_is_refused_quickly(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(_with("mlflow", {"tracking_uri": "http://127.0.0.1:9"}))
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="unreachable"):
        run_sweep(spec)
    assert time.monotonic() - start < 60  # fails fast: no minutes of retries


def test_relative_sqlite_uri_becomes_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"


class _FakeOptunaTrial:
    """Stands in for optuna's Trial in the define-by-run function (records the names it is asked for)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.asked: list[str] = []

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        self.asked.append(name)
        return low

    def suggest_int(self, name: str, low: int, high: int, log: bool = False) -> int:
        self.asked.append(name)
        return low

    def suggest_categorical(self, name: str, choices: list) -> object:
        self.asked.append(name)
        return choices[0]


def test_define_by_run_space_is_conditional_and_fair() -> None:
    space = {
        "lr": {"low": 1e-5, "high": 1e-3, "log": True, "choices": None},
        "penalty_weight": {"low": 1.0, "high": 100.0, "log": True, "choices": None},
        "drift_weight": {"low": 1e-5, "high": 1e-2, "log": True, "choices": None},
        "n_critic": {"low": 1, "high": 5, "log": False, "choices": None},
    }
    variants = ["sn", "gp", "drift"]
    penalties = {"sn": False, "gp": True, "drift": True}
    drifts = {"sn": False, "gp": False, "drift": True}
    picked = []
    for number in range(6):
        trial = _FakeOptunaTrial(number)
        config = define_by_run(trial, variants, space, penalties, drifts, constants={"seed": 3})
        assert config["seed"] == 3
        picked.append(config["variant"])
        v = config["variant"]
        assert ("penalty_weight" in config) == penalties[v]
        assert ("drift_weight" in config) == drifts[v]
        assert all(name.startswith(v + ".") for name in trial.asked)
        assert isinstance(config["n_critic"], int)
    assert picked == variants * 2  # equal budget: variants take turns


def test_a_resumed_sweep_keeps_the_settings_it_started_with() -> None:
    """Defaults that change between a sweep's start and its --resume (or an edited spec) do not reach its trials:
    the state file's settings (JSON, defaults included) win, and each difference is named."""
    import json

    from tune_jobs.pinning import pin_to_start, resolved_settings

    started = parse_spec(_with("model", {**BASE["model"], "critic_head": "ivgan", "output": "tanh"}))
    recorded = json.loads(json.dumps(resolved_settings(started)))  # as the state file keeps it
    recorded["variants"]["gp"]["layer_norm"] = True  # as if gp's preset had the layer norm then
    recorded["train"]["n_critic"] = 5  # ... and n_critic defaulted to 5
    now = parse_spec(BASE)
    pinned, lines = pin_to_start(now, recorded)
    assert (pinned.model.critic_head, pinned.model.output, pinned.train.n_critic) == ("ivgan", "tanh", 5)
    assert pinned.variant("gp").layer_norm and not now.variant("gp").layer_norm
    assert pinned.variant("sn") == now.variant("sn")
    assert sorted(line.split(":")[0] for line in lines) == [
        "model.critic_head", "model.output", "train.n_critic", "variant gp.layer_norm"]
    assert "'ivgan' (the spec now gives 'linear')" in " ".join(lines)
    assert pin_to_start(pinned, recorded) == (pinned, [])  # nothing differs: nothing to say

    recorded["variants"]["sn"]["penalty"] = "r1"  # not a switch that overrides can carry
    with pytest.raises(SpecError, match="variant 'sn' has changed its penalty"):
        pin_to_start(now, recorded)


def test_a_trial_whose_every_fvd_is_nan_is_an_unscored_row_not_a_crash() -> None:
    """The table is built from Tune's results: a trial with evaluations but not one finite FVD gets a row with
    no score (it once raised IndexError, taking the table down at the end of the sweep)."""
    import math
    from types import SimpleNamespace

    import pandas as pd

    from tune_jobs.sweep import _rows

    spec = parse_spec(BASE)
    df = pd.DataFrame({"iteration": [2, 4], "fvd": [math.nan, math.nan], "kvd": [0.1, 0.2]})
    result = SimpleNamespace(config={"variant": "gp", "dataset": "d", "seed": 0}, metrics={"trial_id": "t1"},
                             metrics_dataframe=df, error=None, path="/x/t_t1")
    (row,) = _rows(spec, [result], {})
    assert row.trial_id == "t1" and math.isnan(row.best_fvd) and row.iterations == 0
