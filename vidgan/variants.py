"""WGAN loss variants as small configs of orthogonal switches, and the named presets.

A variant says how the critic is kept (roughly) 1-Lipschitz: spectral normalisation of every critic
layer, a gradient penalty, or both, plus an optional drift term. Each preset, and each penalty kind, is
a small module of :mod:`vidgan.loss_variants` (or of a package's ``vidgan.variants`` entry point): the
paper's variants (Pegg & Gorski) first. Their critics have no layer norm (the paper's had one except in SN-GP:
``tune_jobs/paper.yaml`` restores it with ``overrides``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vidgan import loss_variants

#: a variant's ``penalty``: ``none`` or the name of a penalty kind of the registry (gp, one_sided, ...)
Penalty = str


class Variant(BaseModel):
    """One loss variant.

    penalty: ``none`` or a penalty kind of :func:`vidgan.loss_variants.penalties` (each module says its formula),
    among them:
      - ``gp``: lambda * E[(|g| - 1)^2] at interpolates (WGAN-GP, Gulrajani et al.)
      - ``one_sided``: lambda * E[max(0, |g| - 1)^2] at interpolates (WGAN-LP, Petzka et al.)
      - ``zero_centered``: lambda * E[|g|^2] at interpolates (0-GP, Thanh-Tung et al.)
      - ``r1``: lambda * E[|g|^2] at real samples only (Mescheder et al.; weight lambda, not gamma/2)
    where |g| is the per-sample L2 norm of dD/dx over all C*T*H*W elements.
    drift_weight: epsilon * E[D(x_real)^2] (Karras et al.), 0 to disable.
    layer_norm: the critic's layer norm after each of its first four convs, as iVGAN and the paper had it. Off by
      default: a critic that normalises each sample's activations is blind to the sample's overall scale (at
      initialisation, with zero biases, D(a x) = D(x) for every a > 0), so the generator is told nothing about
      how bright or how contrasted its clips are; see docs/does-it-learn.md. ``tune_jobs/paper.yaml``
      turns it on where the paper had it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    spectral_norm: bool = False
    penalty: Penalty = "gp"
    penalty_weight: float = Field(10.0, ge=0.0, allow_inf_nan=False)  # finite: inf/nan would only diverge
    drift_weight: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    layer_norm: bool = False

    @model_validator(mode="after")
    def _check(self) -> Variant:
        if self.penalty == "none" and not self.spectral_norm:
            raise ValueError(
                f"variant {self.name!r}: no penalty and no spectral norm leaves the critic unconstrained; "
                "use a penalty or spectral_norm=true"
            )
        if self.penalty != "none" and self.penalty_weight == 0.0:
            raise ValueError(f"variant {self.name!r}: penalty {self.penalty!r} with penalty_weight 0")
        return self

    @property
    def has_penalty(self) -> bool:
        """Whether the critic loss has a gradient penalty (so ``penalty_weight`` means something)."""
        return self.penalty != "none"

    @property
    def has_drift(self) -> bool:
        """Whether the critic loss has the drift term (so ``drift_weight`` means something)."""
        return self.drift_weight > 0

    @field_validator("penalty")
    @classmethod
    def _known_penalty(cls, value: str) -> str:
        """``none`` or a penalty kind some variant module defines."""
        known = [loss_variants.NO_PENALTY, *loss_variants.penalties()]
        if value not in known:
            raise ValueError(f"unknown penalty {value!r}; known: {', '.join(known)}")
        return value


def _presets() -> dict[str, Variant]:
    """Every variant module's preset, validated; a plug-in whose preset is no valid variant is left out with one
    warning (:func:`vidgan.loss_variants.drop`), a built-in one raises."""
    presets: dict[str, Variant] = {}
    for name, fields in loss_variants.preset_fields().items():
        try:
            presets[name] = Variant.model_validate(fields)
        except (ValidationError, TypeError) as e:
            loss_variants.drop(name, f"its PRESET is not a valid variant: {_one_line(e)}")
    return presets


def _one_line(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'PRESET'}: {err['msg']}" for err in e.errors())
    return " ".join(str(e).split())


#: every variant module's preset (vidgan/loss_variants/<name>.py: PRESET), the paper's first
PRESETS: dict[str, Variant] = _presets()

PAPER_VARIANTS = ("gp", "sn_gp", "sn", "zero_gp", "one_sided", "drift")


def get_variant(name: str, **overrides: object) -> Variant:
    """A preset by name, optionally with some switches overridden (validated again)."""
    if name not in PRESETS:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(PRESETS)}")
    if not overrides:
        return PRESETS[name]
    return Variant.model_validate({**PRESETS[name].model_dump(), **overrides})
