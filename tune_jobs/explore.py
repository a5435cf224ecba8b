"""How a sweep explores beyond its grid: a persistent Optuna study and Population Based Training.

Optuna (``search:`` in the spec)
    The study lives in an RDB storage (default ``optuna.db`` beside a SQLite ``mlflow.db``) under the
    sweep's name, so ``optuna-dashboard sqlite:///.../optuna.db`` shows it while it runs and ``--resume``
    continues it with every finished trial known to TPE. ``points_to_evaluate`` are enqueued first; since
    the variant of a trial is ``variants[trial.number % len(variants)]`` (an equal budget for each), a point
    is enqueued once per variant with every variant's parameter names (``gp.lr``, ``sn.lr``, ...), so the
    next ``len(variants)`` trials try it on each variant whatever their numbers.

PBT (``scheduler: {type: pbt}``)
    Ray Tune's :class:`~ray.tune.schedulers.PopulationBasedTraining` over ``scheduler.mutations``: the
    population starts from values drawn from those ranges; an exploit copies the donor's checkpoint and
    config and perturbs the mutated values, which :func:`clip_to_ranges` keeps inside the ranges (Adam's
    betas must stay below 1). The trial rebuilds its optimisers from the new config on restore.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tune_jobs.spec import RangeSpec, SweepSpec

#: storage for the Optuna study when the spec names none and MLflow is not a SQLite file
OPTUNA_STORAGE_ENV = "VIDGAN_OPTUNA_STORAGE"
OPTUNA_DB = "optuna.db"


# ------------------------------------------------------------------------------------------ Optuna
def optuna_storage(spec: SweepSpec, tracking_uri: str) -> str | None:
    """The study's storage URL (None: in memory): the spec's, else ``$VIDGAN_OPTUNA_STORAGE``, else
    ``optuna.db`` beside a SQLite MLflow store, else ``./optuna.db``. Local SQLite paths are made absolute."""
    assert spec.search is not None
    url = spec.search.storage or os.environ.get(OPTUNA_STORAGE_ENV)
    if url == "memory":
        return None
    if not url:
        sqlite = tracking_uri.startswith("sqlite:///")
        folder = Path(tracking_uri[len("sqlite:///") :]).parent if sqlite else Path.cwd()
        url = f"sqlite:///{folder / OPTUNA_DB}"
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = "sqlite:///" + str(Path(os.path.expanduser(url[len("sqlite:///") :])).resolve())
    return url


def _inside(r: RangeSpec, value: float) -> bool:
    if r.choices is not None:
        return value in r.choices
    return r.low <= value <= r.high


def preset_point(spec: SweepSpec, variant: str) -> dict[str, float]:
    """The spec's own settings of the searched parameters for ``variant`` (the paper's presets)."""
    assert spec.search is not None
    preset = spec.variant(variant)
    values = {
        "lr": spec.train.lr,
        "beta1": spec.train.betas[0],
        "beta2": spec.train.betas[1],
        "n_critic": spec.train.n_critic,
        "penalty_weight": preset.penalty_weight if preset.has_penalty else None,
        "drift_weight": preset.drift_weight if preset.has_drift else None,
    }
    return {k: v for k, v in values.items() if k in spec.search.space and v is not None}


def points_to_evaluate(spec: SweepSpec) -> list[dict[str, Any]]:
    """Optuna params to enqueue: for each point, one entry per variant holding every variant's names.

    A value outside its search range is left to the sampler (Optuna would warn and use it anyway).
    """
    assert spec.search is not None
    space, wanted = spec.search.space, spec.search.points_to_evaluate
    rounds: list[dict[str, dict[str, float]]]  # per round: variant -> plain params
    if wanted == "presets":
        rounds = [{v: preset_point(spec, v) for v in spec.variants}]
    else:
        rounds = [{v: dict(point) for v in spec.variants} for point in wanted]
    enqueued = []
    for per_variant in rounds:
        params: dict[str, Any] = {}
        for variant, point in per_variant.items():
            for key, value in point.items():
                if _inside(space[key], value):
                    params[f"{variant}.{key}"] = int(value) if key == "n_critic" else float(value)
        enqueued.extend([params] * len(spec.variants))
    return enqueued


def optuna_searcher(spec: SweepSpec, space: Any, study_name: str, storage_url: str | None) -> Any:
    """Ray Tune's OptunaSearch on a persistent study (TPE seeded by ``search.seed``)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    assert spec.search is not None
    storage = optuna.storages.RDBStorage(storage_url) if storage_url else None
    return OptunaSearch(
        space=space,
        metric=spec.eval.scheduler_metric,  # the smoothed score (eval.smoothing)
        mode="min",
        sampler=optuna.samplers.TPESampler(seed=spec.search.seed),
        study_name=spec.search.study_name or study_name,
        storage=storage,
        points_to_evaluate=points_to_evaluate(spec) or None,
    )


# ------------------------------------------------------------------------------------------ PBT
def _bounds(r: RangeSpec) -> tuple[float, float]:
    return (min(r.choices), max(r.choices)) if r.choices is not None else (r.low, r.high)


def clip_to_ranges(config: dict[str, Any], bounds: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """PBT's ``custom_explore_fn``: a perturbed value (x1.2 / x0.8) is put back inside its range."""
    for key, (lo, hi) in bounds.items():
        if key in config:
            value = min(max(config[key], lo), hi)
            config[key] = int(round(value)) if key == "n_critic" else float(value)
    return config


def _domain(key: str, r: RangeSpec) -> Any:
    from ray import tune

    if r.choices is not None:
        return tune.choice([int(c) if key == "n_critic" else c for c in r.choices])
    if key == "n_critic":
        return tune.lograndint(int(r.low), int(r.high) + 1) if r.log else tune.randint(int(r.low), int(r.high) + 1)
    return tune.loguniform(r.low, r.high) if r.log else tune.uniform(r.low, r.high)


def _mutation(key: str, r: RangeSpec) -> Any:
    if r.choices is not None:  # PBT shifts to a neighbouring choice (or resamples)
        return [int(c) if key == "n_critic" else c for c in r.choices]
    return _domain(key, r)


def pbt_param_space(spec: SweepSpec) -> dict[str, Any]:
    """The population's starting configs: the fixed variant/dataset/seed, mutated values drawn at random."""
    mutations = spec.scheduler.mutations
    return {
        "variant": spec.variants[0],
        "dataset": spec.datasets[0].name,
        "seed": spec.seeds[0],
        **{key: _domain(key, r) for key, r in mutations.items()},
    }


def pbt_scheduler(spec: SweepSpec) -> Any:
    from ray.tune.schedulers import PopulationBasedTraining

    s = spec.scheduler
    return PopulationBasedTraining(
        time_attr="iteration",
        perturbation_interval=s.perturbation_interval,
        hyperparam_mutations={key: _mutation(key, r) for key, r in s.mutations.items()},
        quantile_fraction=s.quantile_fraction,
        resample_probability=s.resample_probability,
        custom_explore_fn=functools.partial(
            clip_to_ranges, bounds={key: _bounds(r) for key, r in s.mutations.items()}
        ),
        synch=s.synch,
    )
