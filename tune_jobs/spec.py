"""Sweep specs: YAML files validated into a :class:`SweepSpec` before anything starts.

Structural checks (unknown keys, unknown variants, bad ranges, frames < 9, ...) happen when the file is
loaded; ``tune_jobs.sweep.prepare_datasets`` and ``tracking.check_tracking`` then check what needs the
outside world (datasets present and shaped like the model, enough clips for the real statistics, MLflow
reachable). Either raises :class:`SpecError` naming the problem, and no trial is launched.

:meth:`SweepSpec.trial` turns the config dict Tune hands a trial into a typed :class:`Trial`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vidgan.config import ModelConfig, TrainConfig
from vidgan.ingest.config import SyntheticSpec
from vidgan.variants import PRESETS, Variant, get_variant

SEARCHABLE = ("lr", "beta1", "beta2", "penalty_weight", "n_critic", "drift_weight")
#: hyperparameters that PBT may change between exploits (the model's shape must stay)
PBT_MUTABLE = SEARCHABLE


class SpecError(ValueError):
    """A sweep spec that cannot run; the message says which key and why."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Spec):
    """A shard directory made by ``vidgan ingest`` (local path, relative to the spec's folder, or a URI)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    path: str
    sample: bool = False  # build it from the built-in sample videos when missing
    sample_stride: int = Field(4, ge=1)  # frames between clip starts when building the sample
    # make it when missing: a synthetic dataset (`vidgan ingest --synthetic`), e.g. {kind: squares, clips: 2048}
    synthetic: SyntheticSpec | None = None

    @model_validator(mode="after")
    def _one_builder(self) -> DatasetSpec:
        if self.sample and self.synthetic:
            raise ValueError(f"dataset {self.name!r}: sample and synthetic both say how to build it; keep one")
        return self


class SmoothingSpec(_Spec):
    """What schedulers (ASHA, PBT) and the Optuna searcher decide on: ``<metric>_smooth``, reported beside the
    metric at every evaluation. ``mean_last``: the mean of the last ``k`` evaluations; ``best_so_far``: the
    lowest so far; ``none``: the latest value. See benchmarks/asha_noise.py for why the default."""

    rule: Literal["mean_last", "best_so_far", "none"] = "mean_last"
    k: int = Field(5, ge=1)  # evaluations averaged by mean_last

    def apply(self, values: Sequence[float]) -> float:
        """The smoothed score of a trial's evaluations so far (oldest first; lower is better; NaNs skipped)."""
        finite = [float(v) for v in values if v == v]
        if not finite:
            return math.nan
        if self.rule == "best_so_far":
            return min(finite)
        if self.rule == "mean_last":
            last = finite[-self.k :]
            return sum(last) / len(last)
        return finite[-1]


class EvalSpec(_Spec):
    """FVD/KVD evaluation. FVD is only comparable between runs at equal ``n_fake`` and ``n_real``."""

    every: int = Field(ge=1)  # iterations between evaluations (and checkpoints)
    n_real: int = Field(ge=2)
    n_fake: int = Field(ge=2)
    frames: int = Field(16, ge=9)  # I3D needs at least 9 frames
    metric: Literal["fvd", "kvd"] = "fvd"
    batch_size: int = Field(8, ge=1)
    grid: int = Field(8, ge=0, le=64)  # clips in the sample video logged at each evaluation
    # which generator `fvd` (and kvd, the interval, the samples) score: the moving average of the weights
    # (train.ema) or the raw weights; the other one's FVD is logged as fvd_raw / fvd_ema
    generator: Literal["ema", "raw"] = "ema"
    bootstrap: int = Field(200, ge=0)  # resamples behind fvd_ci_low / fvd_ci_high (0: no interval)
    smoothing: SmoothingSpec = SmoothingSpec()

    @property
    def scheduler_metric(self) -> str:
        """The reported key that ASHA/PBT and the searcher decide on."""
        return f"{self.metric}_smooth"

    @model_validator(mode="after")
    def _check_bootstrap(self) -> EvalSpec:
        if 0 < self.bootstrap < 20:
            raise ValueError(f"bootstrap {self.bootstrap}: 0 (no interval) or >= 20 resamples")
        return self


class SchedulerSpec(_Spec):
    """ASHA (early stopping), FIFO (every trial to max_t) or PBT (population based training)."""

    type: Literal["asha", "fifo", "pbt"] = "asha"
    max_t: int = Field(ge=1)  # generator iterations a trial may run
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1.0)
    # PBT: every perturbation_interval iterations a trial in the bottom quantile_fraction copies the
    # checkpoint and config of one in the top fraction, then perturbs the mutated hyperparameters
    # (x1.2 / x0.8, or a resample with resample_probability; choices shift to a neighbour).
    perturbation_interval: int | None = Field(None, ge=1)
    population: int = Field(4, ge=2)  # trials trained side by side
    mutations: dict[str, RangeSpec] = {}
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)
    resample_probability: float = Field(0.25, ge=0, le=1)
    synch: bool = False  # wait for the whole population at each interval (Ray's synchronous PBT)

    @model_validator(mode="after")
    def _check(self) -> SchedulerSpec:
        if self.grace_period > self.max_t:
            raise ValueError(f"grace_period {self.grace_period} exceeds max_t {self.max_t}")
        pbt_keys = {"perturbation_interval", "mutations", "quantile_fraction", "resample_probability", "synch",
                    "population"}
        if self.type != "pbt":
            stray = sorted(k for k in pbt_keys & self.model_fields_set)
            if stray:
                raise ValueError(f"{stray} only apply to type: pbt")
            return self
        if self.perturbation_interval is None:
            raise ValueError("type pbt needs perturbation_interval (iterations between exploits)")
        if not self.mutations:
            raise ValueError(f"type pbt needs mutations over some of {list(PBT_MUTABLE)}")
        unknown = sorted(set(self.mutations) - set(PBT_MUTABLE))
        if unknown:
            raise ValueError(f"unknown PBT mutation(s) {unknown}; mutable: {list(PBT_MUTABLE)}")
        _check_ranges(self.mutations)
        return self


class ResourcesSpec(_Spec):
    """Per-trial reservation. ``gpu`` may be a fraction (several trials share a GPU) or a whole number."""

    cpu: float = Field(1.0, gt=0)
    # a number, or auto: the GPUs Ray sees when the sweep starts decide (0 without GPUs; else 1 per trial,
    # or an equal share of one when max_concurrent_trials trials would not each get a whole GPU)
    gpu: float | Literal["auto"] = Field(0.0)
    # CPUs reserved in the trial's placement group for its Ray Data tasks (see vidgan.data). Ray Data's
    # planning tasks ask for one whole CPU, so this is 0 (stream with the in-process pyarrow reader
    # instead of Ray Data) or at least 1.
    data_cpu: float = Field(1.0, ge=0)
    threads: int | None = Field(None, ge=1)  # torch threads in the trial (default: max(1, int(cpu)))

    @model_validator(mode="after")
    def _check(self) -> ResourcesSpec:
        if self.gpu != "auto" and self.gpu < 0:
            raise ValueError(f"gpu {self.gpu} must be >= 0 (or auto)")
        if self.gpu != "auto" and self.gpu > 1 and self.gpu != int(self.gpu):
            raise ValueError(f"gpu {self.gpu}: a fraction must be below 1, above 1 a whole number")
        if 0 < self.data_cpu < 1:
            raise ValueError(
                f"data_cpu {self.data_cpu}: Ray Data's tasks each need a whole CPU in the trial's data bundle; "
                "use 0 (in-process pyarrow reader) or >= 1"
            )
        return self


class RangeSpec(_Spec):
    """A float/int range (``low``, ``high``, optional ``log``) or a list of ``choices``, all finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[float] | None = None

    @model_validator(mode="after")
    def _check(self) -> RangeSpec:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("give either non-empty choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs low and high (or choices)")
        if self.low >= self.high:
            raise ValueError(f"bad range: low {self.low} >= high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


def _check_ranges(space: dict[str, RangeSpec]) -> None:
    bounds = {"beta1": (0.0, 1.0), "beta2": (0.0, 1.0), "lr": (0.0, 1.0)}
    for key, (lo, hi) in bounds.items():
        r = space.get(key)
        values = r.choices if r and r.choices else ([r.low, r.high] if r else [])
        if any(not lo <= v < hi for v in values):
            raise ValueError(f"search range of {key} must lie in [{lo}, {hi})")
    nc = space.get("n_critic")
    if nc and any(v < 1 or v != int(v) for v in (nc.choices or [nc.low, nc.high])):
        raise ValueError("n_critic values must be whole numbers >= 1")


class SearchSpec(_Spec):
    """Optuna TPE over per-variant hyperparameters (define-by-run: a parameter exists only where it applies)."""

    algorithm: Literal["optuna"] = "optuna"
    num_samples: int = Field(ge=1)  # trials in total, shared round-robin between the variants
    seed: int = 0
    space: dict[str, RangeSpec]
    # The Optuna study: an RDB URL (sqlite:///..., postgresql://...) that optuna-dashboard opens and a resumed
    # search warm-starts from; default $VIDGAN_OPTUNA_STORAGE, else sqlite optuna.db beside a SQLite mlflow.db,
    # else ./optuna.db; "memory" keeps it in memory. study_name default: the sweep's name.
    storage: str | None = None
    study_name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    # Tried first, each on every variant (one round of the variants per point): "presets" (the spec's train
    # settings and each variant's preset penalty/drift weights) or points such as {lr: 1e-4, n_critic: 5}.
    points_to_evaluate: Literal["presets"] | list[dict[str, float]] = []

    @model_validator(mode="after")
    def _check(self) -> SearchSpec:
        unknown = sorted(set(self.space) - set(SEARCHABLE))
        if unknown:
            raise ValueError(f"unknown search parameter(s) {unknown}; searchable: {list(SEARCHABLE)}")
        _check_ranges(self.space)
        if isinstance(self.points_to_evaluate, list):
            for point in self.points_to_evaluate:
                stray = sorted(set(point) - set(self.space))
                if stray:
                    raise ValueError(f"points_to_evaluate: {stray} are not in the search space {sorted(self.space)}")
        return self


class MlflowSpec(_Spec):
    tracking_uri: str | None = None  # MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory
    experiment: str = "vidgan"


class SweepSpec(_Spec):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    datasets: list[DatasetSpec] = Field(min_length=1)
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    variants: list[str] = Field(min_length=1)
    # per-variant switches on top of the presets, e.g. {gp: {penalty_weight: 5}}; validated as Variants
    overrides: dict[str, dict[str, float | bool]] = {}
    seeds: list[int] = [0]
    eval: EvalSpec
    scheduler: SchedulerSpec
    resources: ResourcesSpec = ResourcesSpec()
    search: SearchSpec | None = None
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(2, ge=0)  # restarts of a crashed trial from its last checkpoint
    mlflow: MlflowSpec = MlflowSpec()
    # Tune results/checkpoints: s3://... on a multi-node cluster; default $VIDGAN_STORAGE_PATH, else ./results
    storage_path: str | None = None

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        unknown = [v for v in self.variants if v not in PRESETS]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; known: {sorted(PRESETS)}")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("variants are listed twice")
        stray = sorted(set(self.overrides) - set(self.variants))
        if stray:
            raise ValueError(f"overrides name variant(s) {stray} that the sweep does not run")
        for name in self.overrides:
            self.variant(name)  # each overridden variant must itself be valid
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must be unique, got {names}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be one or more distinct numbers, got {self.seeds}")
        if self.eval.frames > self.model.frames:
            raise ValueError(f"eval.frames {self.eval.frames} exceeds the model's {self.model.frames} frames")
        if self.scheduler.type != "pbt" and self.eval.every > self.scheduler.grace_period:
            raise ValueError(
                f"eval.every {self.eval.every} exceeds scheduler.grace_period {self.scheduler.grace_period}: "
                "ASHA could not judge a trial at its first rung"
            )
        if self.scheduler.type == "pbt":
            if self.search is not None:
                raise ValueError(
                    "scheduler pbt cannot be combined with a search (PBT explores by itself); drop search or "
                    "use scheduler asha/fifo"
                )
            if len(self.variants) != 1 or len(self.datasets) != 1:
                raise ValueError(
                    "scheduler pbt trains a population of one variant on one dataset (an exploit copies "
                    "weights between trials, and the variants' critics differ); run one PBT sweep per variant"
                )
            if self.scheduler.perturbation_interval % self.eval.every:
                raise ValueError(
                    f"scheduler.perturbation_interval {self.scheduler.perturbation_interval} must be a multiple of "
                    f"eval.every {self.eval.every} (trials report and checkpoint at evaluations)"
                )
            preset = self.variant(self.variants[0])
            moot = [k for k, has in (("penalty_weight", preset.has_penalty), ("drift_weight", preset.has_drift))
                    if k in self.scheduler.mutations and not has]
            if moot:
                raise ValueError(f"scheduler.mutations {moot}: variant {self.variants[0]!r} has no such term")
        if self.resources.gpu == 0 and self.train.bf16:
            raise ValueError("train.bf16 needs GPU trials (resources.gpu > 0)")
        if self.eval.generator == "ema" and not self.train.ema:
            raise ValueError("eval.generator ema needs train.ema (or set eval.generator: raw)")
        return self

    def variant(self, name: str, params: dict[str, Any] | None = None) -> Variant:
        """The preset with searched penalty/drift weights applied where the variant has them."""
        params = params or {}
        overrides: dict[str, Any] = dict(self.overrides.get(name, {}))
        preset = PRESETS[name]
        if "penalty_weight" in params and preset.has_penalty:
            overrides["penalty_weight"] = float(params["penalty_weight"])
        if "drift_weight" in params and preset.has_drift:
            overrides["drift_weight"] = float(params["drift_weight"])
        return get_variant(name, **overrides)

    def train_config(self, params: dict[str, Any] | None = None, seed: int = 0) -> TrainConfig:
        params = params or {}
        data = self.train.model_dump()
        data["seed"] = seed
        if "lr" in params:
            data["lr"] = float(params["lr"])
        if "beta1" in params or "beta2" in params:
            data["betas"] = (float(params.get("beta1", data["betas"][0])), float(params.get("beta2", data["betas"][1])))
        if "n_critic" in params:
            data["n_critic"] = int(params["n_critic"])
        return TrainConfig.model_validate(data)

    def dataset(self, name: str) -> DatasetSpec:
        return next(d for d in self.datasets if d.name == name)

    def trial(self, config: dict[str, Any]) -> Trial:
        """The typed trial behind a Tune config ``{variant, dataset, seed, <searched params>}``.

        Optuna's per-variant parameter names (``gp.lr``) are dropped: the plain names carry the values.
        """
        params = {k: v for k, v in config.items() if k not in TRIAL_KEYS and "." not in k}
        seed = int(config.get("seed", self.seeds[0]))
        name = config["variant"]
        return Trial(
            variant_name=name,
            dataset=self.dataset(config["dataset"]),
            seed=seed,
            variant=self.variant(name, params),
            train_config=self.train_config(params, seed),
            params=params,
        )


TRIAL_KEYS = ("variant", "dataset", "seed")


@dataclass(frozen=True)
class Trial:
    """One trial of a sweep: a variant trained on a dataset from a seed, with its searched hyperparameters."""

    variant_name: str
    dataset: DatasetSpec
    seed: int
    variant: Variant
    train_config: TrainConfig
    params: dict[str, Any] = field(default_factory=dict)  # the searched hyperparameters (lr, beta1, ...)

    @property
    def run_name(self) -> str:
        return f"{self.variant_name}-{self.dataset.name}-s{self.seed}"


def _resolve_path(path: str, base: Path) -> str:
    path = os.path.expandvars(path)
    if "://" in path:
        return path
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base / p).resolve())


#: largest sweep spec file read (bytes)
MAX_SPEC_BYTES = 1 << 20


def load_spec(
    path: str | os.PathLike, *, base_dir: str | os.PathLike | None = None, overrides: Sequence[str] = ()
) -> SweepSpec:
    """Read and validate a YAML spec, with ``overrides`` (``key=value``, dotted keys: :mod:`tune_jobs.overrides`)
    applied first. Relative dataset paths resolve against ``base_dir`` (default: cwd)."""
    raw = read_spec(path)
    if overrides:
        from tune_jobs.overrides import apply

        raw = apply(raw, overrides)
    return parse_spec(raw, source=str(path), base_dir=base_dir)


def read_spec(path: str | os.PathLike) -> dict[str, Any]:
    """The YAML mapping of a spec file, not yet validated (SpecError when it cannot be read or is no mapping)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"sweep spec {str(path)!r} not found")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)  # refused before parsing: a huge YAML parses for minutes
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: over {MAX_SPEC_BYTES // 2**20} MiB; a sweep spec is a small YAML file")
        raw = yaml.safe_load(data.decode("utf-8"))
    except OSError as exc:
        raise SpecError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a sweep spec is a mapping of keys, got {type(raw).__name__}")
    from tune_jobs.overrides import check_size

    check_size(raw, str(path))  # YAML aliases of aliases: refused before anything walks them written out
    return raw


def parse_spec(raw: dict[str, Any], *, source: str = "<spec>", base_dir: str | os.PathLike | None = None) -> SweepSpec:
    """Validate a spec given as a dict; errors name the offending key."""
    base = Path(base_dir or os.getcwd())
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}" for err in exc.errors()
        )
        raise SpecError(f"{source}: invalid sweep spec: {problems}") from None
    datasets = [d.model_copy(update={"path": _resolve_path(d.path, base)}) for d in spec.datasets]
    storage = spec.storage_path or os.environ.get("VIDGAN_STORAGE_PATH")
    storage = storage and _resolve_path(storage, base)
    return spec.model_copy(update={"datasets": datasets, "storage_path": storage})
