"""`vidgan sweep SPEC key=value ...` and `vidgan demo key=value ...`: dotted-key overrides (OmegaConf's dotlist)
checked against the spec's schema before anything runs, validated by the same pydantic schema, and shown by
--check as a diff from the file. (tests/test_sweep_e2e.py checks that a real sweep's parent run keeps them.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tune_jobs import overrides
from tune_jobs.main import main
from tune_jobs.spec import SpecError, load_spec, read_spec

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "tune_jobs" / "demo.yaml"


def test_dotted_keys_lists_and_items_reach_the_validated_spec(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = load_spec(DEMO, overrides=["train.lr=1e-4", "variants=[gp,zero_gp]", "seeds=[0,1,2]",
                                      "scheduler.max_t=400", "eval.every=5", "datasets.0.path=elsewhere",
                                      "overrides.gp.penalty_weight=5", "eval.smoothing.rule=best_so_far"])
    assert spec.train.lr == 1e-4 and spec.variants == ["gp", "zero_gp"] and spec.seeds == [0, 1, 2]
    assert spec.scheduler.max_t == 400 and spec.eval.every == 5 and spec.eval.smoothing.rule == "best_so_far"
    assert spec.datasets[0].path == str(tmp_path / "elsewhere") and spec.variant("gp").penalty_weight == 5.0
    assert spec.train.batch_size == 16 and spec.model.width == 16 and spec.eval.n_fake == 16  # the rest is the file's
    assert load_spec(DEMO) == load_spec(DEMO, overrides=[])


@pytest.mark.parametrize(("item", "words"), [
    ("train.lrr=2e-4", ["unknown override key 'train.lrr'", "nearest: train.lr"]),
    ("lr=2e-4", ["unknown override key 'lr'", "nearest: train.lr"]),
    ("scheduler.maxt=3", ["nearest: scheduler.max_t"]),
    ("seed=[0]", ["nearest: seeds"]),
    ("train.lr.x=1", ["train.lr is a single value"]),
    ("seeds.x=1", ["seeds is a list"]),
    ("train.lr", ["expected key=value"]),
])
def test_a_bad_key_is_named_with_the_nearest_valid_ones(item: str, words: list[str]) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(DEMO, overrides=[item])
    assert all(w in str(caught.value) for w in words), str(caught.value)


def test_values_are_validated_by_the_spec_schema() -> None:
    with pytest.raises(SpecError, match="train.lr: Input should be a valid number"):
        load_spec(DEMO, overrides=["train.lr=fast"])
    with pytest.raises(SpecError, match="unknown variant"):
        load_spec(DEMO, overrides=["variants=[gp,wgan_clip]"])
    with pytest.raises(SpecError, match="override 'seeds=\\[0,': "):
        load_spec(DEMO, overrides=["seeds=[0,"])


def test_a_typo_exits_2_in_one_line_and_starts_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    for argv in (["sweep", str(DEMO), "train.lrr=2e-4", "seeds=[0]"], ["demo", "eval.evry=50"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("vidgan sweep: error: unknown override key"), err
    assert "nearest: eval.every" in err
    assert list(tmp_path.iterdir()) == []  # no mlflow.db, no results, no data


def test_check_prints_the_difference_from_the_file(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "train.batch_size=8", "seeds=[0]", "--check"]) == 0
    out = capsys.readouterr().out
    diff = out.split("sweep demo:")[0]
    assert f"--- {DEMO}" in diff and "+++ with the overrides" in diff
    assert "-  batch_size: 16\n+  batch_size: 8" in diff and "\n-- 1\n" in diff  # seed 1 is gone
    assert "sweep demo: 2 trial(s), 2 variant(s) x 1 dataset(s) x 1 seed(s)" in out
    assert list(tmp_path.iterdir()) == []


def test_the_diff_applies_back(tmp_path: Path) -> None:
    raw = read_spec(DEMO)
    effective = overrides.apply(raw, ["eval.every=2"])
    assert effective["eval"]["every"] == 2 and raw["eval"]["every"] == 200  # the file's mapping is left alone
    assert overrides.diff(raw, raw, "x") == "(the overrides change nothing)"
    assert yaml.safe_load(yaml.safe_dump(effective)) == effective
