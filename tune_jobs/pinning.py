"""A resumed sweep trains with the settings it started with.

A sweep's spec names only what its author set; the rest are vidgan's defaults at the time. If vidgan's defaults
change between a sweep's start and its ``--resume`` (they did: the critic's head, the output layer, n_critic,
Adam's betas), or the spec file is edited in between, the resumed trials would otherwise be built from other
settings than their checkpoints were trained with: a checkpoint that no longer loads, or a comparison that mixes
two settings without saying so.

So the sweep records its resolved settings (every field of ``model`` and ``train``, and every variant's switches,
defaults included) in its state file at the start (:func:`resolved_settings`), and a resume takes them back
(:func:`pin_to_start`), saying in one line per field what differs from the spec it was given.
"""

from __future__ import annotations

from typing import Any

from tune_jobs.spec import SpecError, SweepSpec
from vidgan.config import ModelConfig, TrainConfig


def resolved_settings(spec: SweepSpec) -> dict[str, Any]:
    """What a trial is built from, defaults included, as JSON-able data."""
    return {
        "model": spec.model.model_dump(mode="json"),
        "train": spec.train.model_dump(mode="json"),
        "variants": {name: spec.variant(name).model_dump(mode="json") for name in spec.variants},
    }


def _differences(section: str, started: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [f"{section}.{key}: {started[key]!r} (the spec now gives {now.get(key)!r})"
            for key in started if now.get(key) != started[key]]


def pin_to_start(spec: SweepSpec, started: dict[str, Any]) -> tuple[SweepSpec, list[str]]:
    """``spec`` with the model, train and variant settings recorded at the sweep's start (:func:`resolved_settings`),
    and one line per field that the given spec would have changed."""
    now = resolved_settings(spec)
    lines = [line for section in ("model", "train") for line in _differences(section, started[section], now[section])]
    overrides = {name: dict(switches) for name, switches in spec.overrides.items()}
    for name, fields in started["variants"].items():
        if name not in now["variants"]:
            continue
        changed = {k: v for k, v in fields.items() if now["variants"][name].get(k) != v and k != "name"}
        lines += _differences(f"variant {name}", changed, now["variants"][name])
        not_switches = sorted(k for k, v in changed.items() if not isinstance(v, bool | int | float))
        if not_switches:
            raise SpecError(f"--resume: variant {name!r} has changed its {', '.join(not_switches)} since the sweep "
                            "started; resume it with the vidgan version that started it, or start a new sweep")
        overrides[name] = {**overrides.get(name, {}), **changed}
    if not lines:
        return spec, []
    pinned = spec.model_copy(update={
        "model": ModelConfig.model_validate(started["model"]),
        "train": TrainConfig.model_validate(started["train"]),
        "overrides": overrides,
    })
    return SweepSpec.model_validate(pinned.model_dump(exclude_unset=True)), lines
