"""Loss variants plug in: the registry finds one module per variant in vidgan/loss_variants/ and through the entry
point group ``vidgan.variants``, builds the presets from them, refuses a name defined twice, and the docs'
variants table is what the registry generates."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

from vidgan import loss_variants
from vidgan.variants import PAPER_VARIANTS, PRESETS, Variant

REPO = Path(__file__).resolve().parents[1]


def test_every_module_is_a_preset_and_the_papers_come_first() -> None:
    names = list(loss_variants.registry())
    assert names == list(PRESETS) and names[:7] == [*PAPER_VARIANTS, "r1"]
    files = sorted(p.stem for p in (REPO / "vidgan" / "loss_variants").glob("[!_]*.py"))
    assert sorted(names) == files
    for name in names:
        assert PRESETS[name].name == name and len(loss_variants.summary(name)) > 20  # a formula for the table
    assert {"gp", "one_sided", "zero_centered", "r1"} <= set(loss_variants.penalties())
    with pytest.raises(ValueError, match="unknown penalty 'gradient'; known: none, gp"):
        Variant(name="x", penalty="gradient")


def test_docs_variants_table_is_the_registrys() -> None:
    page = REPO / "docs" / "concepts" / "variants.md"  # the table moved there from the README
    text = page.read_text()
    assert loss_variants.replace_table(text) == text, (
        "docs/concepts/variants.md's variants table differs from the registry: "
        "run `python -m vidgan.loss_variants --readme docs/concepts/variants.md`"
    )
    assert loss_variants.markdown_table() in text


def _plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, name: str, body: str) -> None:
    """A package outside vidgan registering ``module`` as variant ``name`` through an entry point."""
    (tmp_path / f"{module}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    point = metadata.EntryPoint(name=name, value=module, group=loss_variants.ENTRY_POINT_GROUP)
    real = metadata.entry_points

    def entry_points(**kw):  # noqa: ANN003, ANN202 - importlib.metadata's signature
        return [point] if kw.get("group") == loss_variants.ENTRY_POINT_GROUP else real(**kw)

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    loss_variants.registry.cache_clear()
    loss_variants.penalties.cache_clear()


@pytest.fixture
def fresh_registry():
    yield
    loss_variants.registry.cache_clear()
    loss_variants.penalties.cache_clear()
    for module in ("wgan_ct_plugin", "dup_plugin"):
        sys.modules.pop(module, None)


def test_an_entry_point_adds_a_variant_and_its_penalty(tmp_path, monkeypatch, fresh_registry) -> None:
    body = '''"""Consistency term stand-in: lambda E[|g|^4] at the real clips."""
from vidgan.loss_variants import GradientPenalty, real_samples
PENALTY = GradientPenalty("quartic", at=real_samples, per_sample=lambda n: n**4)
PRESET = {"penalty": "quartic", "penalty_weight": 2.0}
'''
    _plugin(tmp_path, monkeypatch, "wgan_ct_plugin", "quartic_r", body)
    assert list(loss_variants.registry())[-1] == "quartic_r"
    assert loss_variants.preset_fields()["quartic_r"] == {"penalty": "quartic", "penalty_weight": 2.0,
                                                          "name": "quartic_r"}
    import torch

    from vidgan.losses import penalty_from_norms

    variant = Variant(name="quartic_r", penalty="quartic", penalty_weight=2.0)
    assert penalty_from_norms(torch.tensor([1.0, 2.0]), variant).item() == pytest.approx(2.0 * (1 + 16) / 2)


def test_a_plugin_that_takes_a_variant_name_is_left_out(tmp_path, monkeypatch, fresh_registry, capsys) -> None:
    """A plug-in that takes a built-in's name costs its own name only (#30 item 7): warned, the built-in stays."""
    _plugin(tmp_path, monkeypatch, "dup_plugin", "gp", 'PRESET = {"penalty": "gp"}\n')
    assert loss_variants.registry()["gp"].__name__ == "vidgan.loss_variants.gp"
    assert "variant plug-in 'gp'" in capsys.readouterr().err
