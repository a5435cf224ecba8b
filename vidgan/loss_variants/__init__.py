"""Loss variants as plug-ins: one small module per variant, found by a registry.

A variant module (a file in this folder, or a module named by an entry point of the group ``vidgan.variants``
whose name is the variant's) holds:

- its docstring: the first line is the variant in one phrase with its formula (the variants table of
  docs/concepts/variants.md), the rest says where it comes from and what was chosen;
- ``PRESET``: the :class:`~vidgan.variants.Variant` fields of the preset (all but ``name``, which is the
  module's), e.g. ``{"penalty": "gp"}``;
- optionally ``PENALTY``: a :class:`GradientPenalty` the preset (and other variants) can name in ``penalty``:
  where the critic's input gradient is taken (``at``) and what is averaged of its per-sample norm
  (``per_sample``); the loss is ``penalty_weight * mean(per_sample(|g|))``;
- optionally ``ORDER``: where it goes in listings (the paper's variants first; default 100, then by name).

|g| is always the per-sample L2 norm of dD/dx over all C*T*H*W elements (:mod:`vidgan.losses`). Nothing here
imports torch at import time: a spec is validated without it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from vidgan.plugins import PluginError, discover, origin, skip

if TYPE_CHECKING:
    import torch

#: the entry-point group through which other packages add variants (name = variant, value = module)
ENTRY_POINT_GROUP = "vidgan.variants"
#: the ``penalty`` of a variant without a gradient penalty (spectral norm alone)
NO_PENALTY = "none"


@dataclass(frozen=True)
class GradientPenalty:
    """A kind of gradient penalty: the points where the critic's input gradient is taken, from (real, fake,
    generator), and the per-sample penalty of the gradient's norms."""

    name: str
    at: Callable[[torch.Tensor, torch.Tensor, torch.Generator | None], torch.Tensor]
    per_sample: Callable[[torch.Tensor], torch.Tensor]


def interpolate(real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """alpha * real + (1 - alpha) * fake, one alpha ~ U[0, 1) per sample."""
    import torch

    alpha = torch.rand(real.shape[0], device=real.device, generator=generator, dtype=real.dtype)
    alpha = alpha.view(-1, *([1] * (real.dim() - 1)))
    return alpha * real + (1 - alpha) * fake


def real_samples(real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The real samples themselves (R1); draws nothing from ``generator``."""
    return real


#: a variant module that cannot be registered (a name twice, a missing PRESET, a bad PENALTY)
RegistryError = PluginError


def _lacks(module: ModuleType) -> str | None:
    """What a variant module lacks (no ``PRESET`` dict, a ``PENALTY`` that is not a GradientPenalty), or None."""
    if not isinstance(getattr(module, "PRESET", None), dict):
        return "has no PRESET dict"
    penalty = getattr(module, "PENALTY", None)
    if penalty is not None and not isinstance(penalty, GradientPenalty):
        return "has a PENALTY that is not a GradientPenalty"
    return None


@functools.cache
def registry() -> dict[str, ModuleType]:
    """Every variant module by variant name: this folder's, then those of the ``vidgan.variants`` entry points;
    ordered by ``ORDER``, then name. RegistryError for a built-in module without ``PRESET`` or with a ``PENALTY``
    that is not a GradientPenalty; a plug-in with either, one that takes a taken name or defines a penalty kind
    already defined is left out with a warning (:mod:`vidgan.plugins`)."""
    modules = discover(sys.modules[__name__], ENTRY_POINT_GROUP, what="variant", check=_lacks)
    kinds = {m.PENALTY.name for m in modules.values() if origin(m) is None and getattr(m, "PENALTY", None)}
    for name, module in list(modules.items()):
        penalty = getattr(module, "PENALTY", None)
        if origin(module) is not None and penalty is not None:
            if penalty.name in kinds or penalty.name == NO_PENALTY:
                del modules[name]
                skip(module, "variant", f"defines the penalty kind {penalty.name!r}, which is already defined")
            else:
                kinds.add(penalty.name)
    return dict(sorted(modules.items(), key=lambda kv: (getattr(kv[1], "ORDER", 100), kv[0])))


def drop(name: str, why: str) -> None:
    """Leave the plug-in variant ``name`` out of the registry (with one warning saying ``why``): its preset is not a
    valid variant (:mod:`vidgan.variants`). A built-in one raises RegistryError instead."""
    module = registry()[name]
    skip(module, "variant", why)
    del registry()[name]  # the cached dict itself: every later call sees it without the plug-in
    penalties.cache_clear()  # and its penalty kind, if it had one, is gone too


@functools.cache
def penalties() -> dict[str, GradientPenalty]:
    """Every gradient penalty kind the variant modules define, by name."""
    out: dict[str, GradientPenalty] = {}
    for module in registry().values():
        penalty = getattr(module, "PENALTY", None)
        if penalty is not None:
            if penalty.name in out or penalty.name == NO_PENALTY:
                raise RegistryError(f"penalty {penalty.name!r} of {module.__name__} is defined twice")
            out[penalty.name] = penalty
    return out


def preset_fields() -> dict[str, dict[str, Any]]:
    """Each variant's preset: its Variant fields, ``name`` included."""
    return {name: {**module.PRESET, "name": name} for name, module in registry().items()}


def summary(name: str) -> str:
    """The first line of a variant module's docstring (the docs' variants table)."""
    return ((registry()[name].__doc__ or "").strip().splitlines() or [""])[0].strip()


# ------------------------------------------------------------------------------------------- the docs' table
#: the block of docs/concepts/variants.md the table fills
#: (``python -m vidgan.loss_variants --readme docs/concepts/variants.md`` rewrites it)
TABLE_BEGIN = ("<!-- variants table: generated by "
               "`python -m vidgan.loss_variants --readme docs/concepts/variants.md` -->")
TABLE_END = "<!-- end of the variants table -->"


def _critic(fields: Any) -> str:
    parts = [p for p, on in (("spectral norm", fields.spectral_norm), ("layer norm", fields.layer_norm)) if on]
    return " + ".join(parts) if parts else "plain"


def markdown_table() -> str:
    """The variants table of docs/concepts/variants.md, from the registry: name, what it is (the module's first
    docstring line), the critic's normalisation and the weights of its preset, and the module that defines it."""
    from vidgan.variants import PRESETS

    lines = ["| name | critic constraint | critic layers | weights | module |", "|---|---|---|---|---|"]
    for name, module in registry().items():
        preset = PRESETS[name]
        weights = [f"lambda {preset.penalty_weight:g}"] if preset.has_penalty else []
        weights += [f"epsilon {preset.drift_weight:g}"] if preset.has_drift else []
        where = module.__name__.replace(".", "/") + ".py" if module.__name__.startswith(__name__) else module.__name__
        summary_text = summary(name).replace("|", "\\|")
        lines.append(f"| `{name}` | {summary_text} | {_critic(preset)} | {', '.join(weights) or '-'} | `{where}` |")
    return "\n".join(lines)


def replace_table(text: str) -> str:
    """``text`` (docs/concepts/variants.md) with the block between :data:`TABLE_BEGIN` and :data:`TABLE_END`
    regenerated."""
    head, found, rest = text.partition(TABLE_BEGIN)
    _, found_end, tail = rest.partition(TABLE_END)
    if not found or not found_end:
        raise RegistryError("the page has no variants table block (its begin and end markers)")
    return f"{head}{TABLE_BEGIN}\n{markdown_table()}\n{TABLE_END}{tail}"
