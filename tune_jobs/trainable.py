"""The Tune function trainable: one trial trains one variant on one dataset and reports FVD.

Every ``eval.every`` iterations the trial scores its generator (FVD/KVD against the real features the
sweep prepared), logs metrics, a sample video grid and its FVD curve to its nested MLflow run, and
reports to Tune with a checkpoint (trainer state + history), which ASHA uses to stop weak trials and
FailureConfig uses to restart a crashed one where it left off, into the same MLflow run.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tune_jobs import tracking
from tune_jobs.spec import SweepSpec
from vidgan.trainer import Trainer, TrainingDiverged, read_checkpoint

STATE_FILE = "trainer.pt"
HISTORY_FILE = "history.json"


@dataclass(frozen=True)
class SweepContext:
    """What every trial of a sweep shares (passed with ``tune.with_parameters``)."""

    spec: SweepSpec
    sweep: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """The searched hyperparameters of a trial config (Optuna's per-variant names like ``gp.lr`` dropped)."""
    return {k: v for k, v in config.items() if k not in ("variant", "dataset", "seed") and "." not in k}


class _Window:
    """Throughput over the iterations since the last report (evaluation time excluded)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.iters, self.train_s, self.wait_s, self.clips = 0, 0.0, 0.0, 0
        self.sums: dict[str, float] = {}

    def add(self, m: dict[str, float], clips: int) -> None:
        self.iters += 1
        self.train_s += m["iter_time_s"]
        self.wait_s += m["data_wait_s"]
        self.clips += clips
        for key in ("critic_loss", "wasserstein", "penalty", "drift", "grad_norm", "generator_loss"):
            self.sums[key] = self.sums.get(key, 0.0) + m[key]

    def summary(self) -> dict[str, float]:
        n = max(self.iters, 1)
        out = {k: v / n for k, v in self.sums.items()}
        out["iterations_per_s"] = self.iters / self.train_s if self.train_s else 0.0
        out["clips_per_s"] = self.clips / self.train_s if self.train_s else 0.0
        out["data_wait_fraction"] = self.wait_s / self.train_s if self.train_s else 0.0
        return out


def _plot_curve(history: list[dict[str, float]], metric: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot([h["iteration"] for h in history], [h[metric] for h in history], marker="o")
    ax.set_xlabel("generator iterations")
    ax.set_ylabel(metric.upper())
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _log_samples(tracker: tracking.Tracker, trainer: Trainer, z: torch.Tensor, folder: Path) -> None:
    from vidgan.video import tile, to_uint8_clips, write_video

    gen = trainer.generator
    was_training = gen.training
    gen.eval()
    with torch.inference_mode():
        clips = to_uint8_clips(gen(z.to(trainer.device)))
    gen.train(was_training)
    grid = tile(clips)
    for suffix in (".gif", ".mp4"):
        path = write_video(grid, folder / f"samples_{trainer.iteration:07d}{suffix}")
        tracker.log_artifact(path, "samples")


def train_trial(config: dict[str, Any], ctx: SweepContext) -> None:
    """Tune function trainable (wrap with ``tune.with_parameters(train_trial, ctx=...)``)."""
    from ray import tune

    from tune_jobs.metrics import TrialMetrics
    from vidgan.data import arrow_clip_batches, ray_clip_batches
    from vidgan.fvd import FVDEvaluator, real_features

    spec = ctx.spec
    tune_ctx = tune.get_context()
    trial_id = tune_ctx.get_trial_id()
    variant_name, dataset_name, seed = config["variant"], config["dataset"], int(config.get("seed", 0))
    params = trial_params(config)
    dataset = spec.dataset(dataset_name)
    variant = spec.variant(variant_name, params)
    train_cfg = spec.train_config(params, seed)
    torch.set_num_threads(spec.resources.threads or max(1, int(spec.resources.cpu)))

    run_id, _ = tracking.find_or_create_trial_run(
        ctx.tracking_uri,
        ctx.experiment_id,
        ctx.parent_run_id,
        trial_id,
        run_name=f"{variant_name}-{dataset_name}-{trial_id}",
        tags={tracking.TAG_SWEEP: ctx.sweep, tracking.TAG_VARIANT: variant_name, tracking.TAG_DATASET: dataset_name},
    )
    tracker = tracking.Tracker(ctx.tracking_uri, run_id)
    previous = tracker.client.get_run(run_id).data.tags
    if previous.get(tracking.TAG_END) == "diverged":  # a restart of a diverged trial: fail again at once
        raise RuntimeError(f"trial {trial_id} diverged earlier: {previous.get(tracking.TAG_REASON)}")
    tracker.log_params(
        {
            "variant": variant_name,
            "dataset": dataset_name,
            "dataset_path": dataset.path,
            "seed": seed,
            "model": spec.model.model_dump(),
            "loss": variant.model_dump(),
            "train": train_cfg.model_dump(),
            "eval": spec.eval.model_dump(),
            "resources": spec.resources.model_dump(),
        }
    )

    trainer = Trainer(spec.model, variant, train_cfg)
    history: list[dict[str, float]] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(read_checkpoint(Path(folder) / STATE_FILE))
            history = json.loads((Path(folder) / HISTORY_FILE).read_text())

    ev = spec.eval
    real = real_features(dataset.path, ev.n_real, ev.frames, batch_size=ev.batch_size)
    evaluator = FVDEvaluator(real, ev.n_fake, ev.frames, device=trainer.device, batch_size=ev.batch_size)
    grid_z = evaluator.latents(spec.model.z_dim)[: ev.grid]
    # A fresh shuffle order after a restart, so the resumed trial does not replay the same batches.
    stream = ray_clip_batches if spec.resources.data_cpu > 0 else arrow_clip_batches
    batches = stream(
        dataset.path, train_cfg.batch_size, shuffle=True, flip=True, seed=seed * 100_003 + trainer.iteration
    )
    gauges = TrialMetrics(ctx.sweep, trial_id, variant_name)
    window = _Window()
    clips_per_iteration = train_cfg.batch_size * train_cfg.n_critic
    max_t = spec.scheduler.max_t

    while trainer.iteration < max_t:
        try:
            m = trainer.train_iteration(batches)
        except TrainingDiverged as exc:
            tracker.set_tags({tracking.TAG_END: "diverged", tracking.TAG_REASON: str(exc)})
            tracker.finish("FAILED")
            raise
        window.add(m, clips_per_iteration)
        if trainer.iteration % ev.every and trainer.iteration < max_t:
            continue

        t0 = time.perf_counter()
        scores = evaluator.evaluate(trainer.generator)
        eval_s = time.perf_counter() - t0
        result: dict[str, Any] = {
            **window.summary(),
            "fvd": scores["fvd"],
            "kvd": scores["kvd"],
            "kvd_stderr": scores["kvd_stderr"],
            "n_fake": scores["n"],
            "n_real": ev.n_real,
            "iteration": trainer.iteration,
            "critic_updates": trainer.critic_updates,
            "generator_updates": trainer.generator_updates,
            "paper_steps": trainer.critic_updates + trainer.generator_updates,
            "eval_time_s": eval_s,
        }
        window.reset()
        history.append({k: float(result[k]) for k in ("iteration", "fvd", "kvd", "kvd_stderr")})
        gauges.record(
            iterations_per_s=result["iterations_per_s"],
            clips_per_s=result["clips_per_s"],
            data_wait_fraction=result["data_wait_fraction"],
            fvd=result["fvd"],
            kvd=result["kvd"],
            gpu_memory_bytes=float(torch.cuda.memory_allocated()) if trainer.device.type == "cuda" else 0.0,
        )
        tracker.log_metrics(result, step=trainer.iteration)
        if trainer.iteration >= max_t:
            tracker.set_tags({tracking.TAG_END: "completed"})
        with tempfile.TemporaryDirectory(prefix="vidgan-ckpt-") as tmp:
            folder = Path(tmp)
            if ev.grid:
                _log_samples(tracker, trainer, grid_z, folder)
            tracker.log_artifact(_plot_curve(history, ev.metric, folder / f"{ev.metric}_curve.png"))
            ckpt_dir = folder / "checkpoint"
            ckpt_dir.mkdir()
            trainer.save(ckpt_dir / STATE_FILE)
            (ckpt_dir / HISTORY_FILE).write_text(json.dumps(history))
            result["mlflow_run_id"] = run_id
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(ckpt_dir)))

    tracker.finish("FINISHED")
