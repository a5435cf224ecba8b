"""The Tune function trainable: one trial trains one variant on one dataset and reports FVD.

:func:`train_trial` reads in one breath: build the trial, restore it, then train / evaluate / report.
Every ``eval.every`` iterations the trial scores its generator (FVD/KVD against the real features the
sweep prepared), hands the result to its :class:`~tune_jobs.tracking.TrialLogger` (MLflow, gauges,
sample videos, curve) and reports to Tune with a checkpoint (trainer state + history), which ASHA uses to
stop weak trials and FailureConfig uses to restart a crashed one where it left off, into the same run.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tune_jobs.spec import SweepSpec, Trial
from tune_jobs.tracking import SweepContext, TrialLogger
from vidgan import shards
from vidgan.trainer import Trainer, TrainingDiverged, TrainingOutOfMemory, limit_gpu_memory, read_checkpoint

#: file names inside a trial's Tune checkpoint folder
CHECKPOINT_FILE = "trainer.pt"
HISTORY_FILE = "history.json"
#: what a trial's history (in its checkpoint) keeps of each evaluation
HISTORY_KEYS = ("iteration", "fvd", "fvd_raw", "fvd_ema", "fvd_ci_low", "fvd_ci_high", "kvd", "kvd_stderr")
OWNER_FILE = "owner.json"  # the trial that wrote the checkpoint: another trial's means a PBT exploit


def train_trial(config: dict[str, Any], ctx: SweepContext) -> None:
    """Tune function trainable (wrap with ``tune.with_parameters(train_trial, ctx=...)``)."""
    import ray
    from ray import tune

    from tune_jobs.restarts import read_restarts
    from vidgan.fvd import FVDEvaluator, real_features
    from vidgan.video import sample_clips

    spec, trial = ctx.spec, ctx.spec.trial(config)
    shards.trust(ctx.verified_shards)  # what the driver hashed is not hashed again while it is unchanged
    torch.set_num_threads(spec.resources.threads or max(1, int(spec.resources.cpu)))
    checkpoint = tune.get_checkpoint()
    with checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext() as restored:
        # the spool (what MLflow is still owed) lives in the trial's folder and travels in its checkpoints
        logger = TrialLogger(ctx, trial, tune.get_context().get_trial_id(), folder=Path.cwd(), checkpoint=restored)
    limit_gpu_memory(spec.resources.gpu)  # a fractional GPU: cap this trial's share of its memory
    trainer = Trainer(spec.model, trial.variant, trial.train_config)
    history = restore(trainer, checkpoint)
    logger.restored(checkpoint_owner(checkpoint), trainer.iteration)
    node_id = ray.get_runtime_context().get_node_id()
    if checkpoint is not None:  # restarted by Tune: the driver recorded why (tune_jobs.restarts)
        storage = tune.get_context().get_storage()
        logger.restarted(read_restarts(storage.storage_filesystem, storage.trial_fs_path), node_id)
    ev, max_t = spec.eval, spec.scheduler.max_t
    real = real_features(trial.dataset.path, ev.n_real, ev.frames, batch_size=ev.batch_size)
    evaluator = FVDEvaluator(
        real, ev.n_fake, ev.frames, device=trainer.device, batch_size=ev.batch_size, n_boot=ev.bootstrap
    )
    grid_z = evaluator.latents(spec.model.z_dim)[: ev.grid]
    squares = is_squares(trial.dataset.path)  # its physics gives a learning score beside FVD
    batches = open_stream(spec, trial, trainer.iteration)
    window = ThroughputWindow(trial.train_config.batch_size * trial.train_config.n_critic)

    while trainer.iteration < max_t:
        try:
            window.add(trainer.train_iteration(batches))
            logger.gauges.count(iterations=1, clips=window.clips_per_iteration)
        # ends this trial with its reason, not the sweep; Tune restarts it from its checkpoint up to max_failures
        # times (out of memory on a shared GPU can pass), a diverged one fails again at once (TrialLogger)
        except (TrainingDiverged, TrainingOutOfMemory) as exc:
            logger.failed(exc)
            raise
        if trainer.iteration % ev.every and trainer.iteration < max_t:
            continue
        t0 = time.perf_counter()
        scores = score_generators(evaluator, trainer, ev.generator)
        result = {**window.summary(), **evaluation_metrics(trainer, scores, ev.n_real),
                  **(squares_metrics(trainer, evaluator, ev.generator) if squares else {}),
                  **hyperparameters(trainer), "eval_time_s": time.perf_counter() - t0}
        history.append({k: float(result[k]) for k in HISTORY_KEYS if k in result})
        result[ev.scheduler_metric] = ev.smoothing.apply([h[ev.metric] for h in history])
        with tempfile.TemporaryDirectory(prefix="vidgan-trial-") as tmp:
            samples = sample_clips(sampling_generator(trainer, ev.generator), grid_z) if ev.grid else None
            logger.report(result, history, samples, Path(tmp))
            if trainer.iteration >= max_t:
                logger.completed()
            folder = save_checkpoint(trainer, history, Path(tmp) / "checkpoint", owner=logger.trial_id)
            spooled = logger.checkpointed(folder)
            # after the last report Tune stops the trial: the driver delivers that checkpoint's spool
            tune.report({**result, "mlflow_run_id": logger.run_id, "node_id": node_id},
                        checkpoint=tune.Checkpoint.from_directory(str(folder)))
        logger.committed(spooled)  # Tune has the checkpoint: a restore never recomputes these records
    logger.finish()


# ------------------------------------------------------------------------------------------ pieces


def restore(trainer: Trainer, checkpoint: Any) -> list[dict[str, float]]:
    """Load a Tune checkpoint into ``trainer`` (when there is one); return the evaluation history so far."""
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as folder:
        trainer.load_state_dict(read_checkpoint(Path(folder) / CHECKPOINT_FILE))
        return json.loads((Path(folder) / HISTORY_FILE).read_text())


def save_checkpoint(
    trainer: Trainer, history: list[dict[str, float]], folder: Path, owner: str | None = None
) -> Path:
    """Write the trainer state and history (and the writing trial's id) into ``folder`` (a Tune checkpoint)."""
    folder.mkdir(parents=True, exist_ok=True)
    trainer.save(folder / CHECKPOINT_FILE)
    (folder / HISTORY_FILE).write_text(json.dumps(history))
    if owner is not None:
        (folder / OWNER_FILE).write_text(json.dumps({"trial_id": owner, "iteration": trainer.iteration}))
    return folder


def checkpoint_owner(checkpoint: Any) -> str | None:
    """The id of the trial that wrote a Tune checkpoint (None: no checkpoint, or written before owners)."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        path = Path(folder) / OWNER_FILE
        return json.loads(path.read_text())["trial_id"] if path.is_file() else None


def hyperparameters(trainer: Trainer) -> dict[str, float]:
    """The hyperparameters the trainer runs with now (PBT changes them), as logged metrics ``hp_*``."""
    group = trainer.opt_g.param_groups[0]
    return {
        "hp_lr": float(group["lr"]),
        "hp_beta1": float(group["betas"][0]),
        "hp_beta2": float(group["betas"][1]),
        "hp_n_critic": float(trainer.train_cfg.n_critic),
        "hp_penalty_weight": float(trainer.variant.penalty_weight) if trainer.variant.has_penalty else 0.0,
        "hp_drift_weight": float(trainer.variant.drift_weight),
    }


def open_stream(spec: SweepSpec, trial: Trial, iteration: int) -> Iterator[torch.Tensor]:
    """The trial's endless real batches: Ray Data in its data bundle, or the pyarrow reader (data_cpu 0).
    A restarted trial draws a fresh shuffle order rather than replaying the batches it trained on."""
    from vidgan.data import arrow_clip_batches, resume_seed

    if spec.resources.data_cpu > 0:
        from vidgan.ray_stream import ray_clip_batches as stream
    else:
        stream = arrow_clip_batches
    seed = resume_seed(trial.seed, iteration)
    return stream(trial.dataset.path, trial.train_config.batch_size, shuffle=True, flip=True, seed=seed)


def sampling_generator(trainer: Trainer, which: str = "ema") -> torch.nn.Module:
    """The generator sample videos show: the one ``fvd`` scores (``eval.generator``), the moving average when
    ``which`` is ``ema`` and the trainer keeps one, else the raw weights."""
    return trainer.ema.module if which == "ema" and trainer.ema is not None else trainer.generator


def score_generators(evaluator: Any, trainer: Trainer, which: str = "ema") -> dict[str, float | int]:
    """Score ``which`` generator (``ema`` or ``raw``) fully (fvd, its interval, kvd) and the other one's FVD
    alone: the result holds ``fvd_raw`` always and ``fvd_ema`` when the trainer keeps a moving average."""
    if trainer.ema is None:
        scores = evaluator.evaluate(trainer.generator)
        return {**scores, "fvd_raw": scores["fvd"]}
    nets = {"ema": trainer.ema.module, "raw": trainer.generator}
    other = "raw" if which == "ema" else "ema"
    scores = evaluator.evaluate(nets[which])
    return {**scores, f"fvd_{which}": scores["fvd"], f"fvd_{other}": evaluator.fvd(nets[other])}


def is_squares(path: str) -> bool:
    """Whether a dataset is the synthetic squares (``vidgan ingest --synthetic squares``)."""
    synthetic = shards.describe(path).manifest.get("params", {}).get("synthetic") or {}
    return synthetic.get("kind") == "squares"


def squares_metrics(trainer: Trainer, evaluator: Any, which: str = "ema") -> dict[str, float]:
    """The squares learning score (:mod:`vidgan.squares_score`) of the scored generator's clips from the FVD's
    latents: ``squares_one_square``, ``squares_smooth_motion``, ``squares_background_error``,
    ``squares_diversity``, and how far from a square: ``squares_one_object``, ``squares_object_side``,
    ``squares_object_fill``."""
    from vidgan.squares_score import squares_score
    from vidgan.video import sample_clips

    clips = sample_clips(sampling_generator(trainer, which), evaluator.latents(trainer.model_cfg.z_dim))
    score = squares_score(clips).as_dict("squares_")
    score.pop("squares_n_clips")
    return score


def evaluation_metrics(trainer: Trainer, scores: dict[str, float | int], n_real: int) -> dict[str, float]:
    """What Tune, MLflow and the gauges get at an evaluation, besides throughput."""
    on_gpu = trainer.device.type == "cuda"
    return {
        "fvd": scores["fvd"],
        **{k: scores[k] for k in ("fvd_raw", "fvd_ema", "fvd_ci_low", "fvd_ci_high") if k in scores},
        "kvd": scores["kvd"],
        "kvd_stderr": scores["kvd_stderr"],
        "n_fake": scores["n"],
        "n_real": n_real,
        "iteration": trainer.iteration,
        "critic_updates": trainer.critic_updates,
        "generator_updates": trainer.generator_updates,
        "paper_steps": trainer.critic_updates + trainer.generator_updates,
        "gpu_memory_bytes": float(torch.cuda.memory_allocated(trainer.device)) if on_gpu else 0.0,
    }


class ThroughputWindow:
    """Throughput and mean losses over the iterations since the last report (evaluation time excluded)."""

    LOSSES = ("critic_loss", "wasserstein", "penalty", "drift", "grad_norm", "generator_loss")

    def __init__(self, clips_per_iteration: int) -> None:
        self.clips_per_iteration = clips_per_iteration
        self._reset()

    def _reset(self) -> None:
        self.iters, self.train_s, self.wait_s = 0, 0.0, 0.0
        self.sums = dict.fromkeys(self.LOSSES, 0.0)

    def add(self, m: dict[str, float]) -> None:
        self.iters += 1
        self.train_s += m["iter_time_s"]
        self.wait_s += m["data_wait_s"]
        for key in self.LOSSES:
            self.sums[key] += m[key]

    def summary(self) -> dict[str, float]:
        """The window's means and rates; the window starts again empty."""
        n, t = max(self.iters, 1), self.train_s
        out = {k: v / n for k, v in self.sums.items()}
        out["iterations_per_s"] = self.iters / t if t else 0.0
        out["clips_per_s"] = self.iters * self.clips_per_iteration / t if t else 0.0
        out["data_wait_fraction"] = self.wait_s / t if t else 0.0
        self._reset()
        return out
