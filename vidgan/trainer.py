"""The WGAN trainer: one iteration = ``n_critic`` critic updates, each on a fresh real batch, then one
generator update.

Cost-conscious where the paper's code was not: the generator runs without a graph during critic
updates, the critic's parameters need no gradients during the generator update, and losses are
brought to the host once per iteration (one device sync), not after every update.

Counters: ``iteration`` (= generator updates), ``critic_updates`` and ``generator_updates``; the paper
counted every update as a "step", so ``paper_steps = critic_updates + generator_updates`` is reported too.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import random
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidgan import storage
from vidgan.budget import ModelTooLarge, check_evaluation, check_fits
from vidgan.config import ModelConfig, TrainConfig
from vidgan.ema import GeneratorEMA
from vidgan.files import atomic_write
from vidgan.losses import drift_penalty, gradient_penalty
from vidgan.models import Critic, Generator
from vidgan.variants import Variant

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, not a vidgan checkpoint, of another version, or
    holding Python objects beyond tensors and plain data (refused unread); the message names the file."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; training cannot go on from this state."""

    def __init__(self, iteration: int, losses: dict[str, float]) -> None:
        self.iteration = iteration
        self.losses = losses
        bad = ", ".join(f"{k}={v}" for k, v in losses.items() if not np.isfinite(v))
        super().__init__(f"training diverged at iteration {iteration}: non-finite {bad}")

    def __reduce__(self) -> tuple:  # picklable across Ray processes
        return (type(self), (self.iteration, self.losses))


class TrainingOutOfMemory(RuntimeError):
    """The device ran out of memory in an iteration (e.g. a trial capped at its share of a GPU by
    :func:`limit_gpu_memory`): this trial cannot go on at this size; ``reason`` is the allocator's message."""

    def __init__(self, iteration: int, reason: str) -> None:
        self.iteration = iteration
        self.reason = reason
        super().__init__(f"out of memory at iteration {iteration}: {reason}")

    def __reduce__(self) -> tuple:  # picklable across Ray processes
        return (type(self), (self.iteration, self.reason))


#: device memory a process uses outside PyTorch's caching allocator (CUDA context, library handles); an
#: estimate, not a measurement
CONTEXT_RESERVE_BYTES = 512 * 2**20


def limit_gpu_memory(fraction: float, device: int | None = None) -> float | None:
    """Cap this process's CUDA caching allocator at its share of the GPU, ``fraction`` of the device's
    memory less :data:`CONTEXT_RESERVE_BYTES`, so trials sharing a GPU (Ray's fractional ``gpu``) cannot
    take each other's memory: the one that outgrows its share gets an out-of-memory error, which
    :meth:`Trainer.train_iteration` raises as :class:`TrainingOutOfMemory`, and its neighbours go on.

    Returns the fraction set; None (and does nothing) without CUDA, for 0 (no GPU) and for >= 1 (whole GPUs).
    """
    if not fraction >= 0:
        raise ValueError(f"GPU fraction must be >= 0, got {fraction}")
    if fraction == 0 or fraction >= 1 or not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device() if device is None else device
    total = torch.cuda.get_device_properties(index).total_memory
    capped = fraction - CONTEXT_RESERVE_BYTES / total
    if capped <= 0:
        raise ValueError(f"GPU fraction {fraction} leaves no memory beyond the CUDA context")
    torch.cuda.set_per_process_memory_fraction(capped, index)
    return capped


def pick_device(requested: str | None = None) -> torch.device:
    """The requested device, else CUDA when present, else CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A real batch [B, 3, T, H, W] on ``device``, dtype and layout unchanged: a channels-last view (as
    :mod:`vidgan.data` yields) travels as its compact buffer. ``non_blocking``: asynchronous from page-locked
    memory (the data streams pin their batches when CUDA is present), an ordinary copy otherwise."""
    if batch.dim() == 5 and not batch.is_contiguous() and batch.permute(0, 2, 3, 4, 1).is_contiguous():
        return batch.permute(0, 2, 3, 4, 1).to(device, non_blocking=True).permute(0, 4, 1, 2, 3)
    return batch.to(device, non_blocking=True)


def to_model_range(
    batch: torch.Tensor, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format
) -> torch.Tensor:
    """A real batch [B, 3, T, H, W] on ``device`` in [-1, 1], laid out in ``memory_format`` (contiguous:
    channels-first); uint8 is converted after the copy, on the device. The one definition of the range."""
    batch = to_device(batch, device)
    if batch.dtype == torch.uint8:
        return batch.to(torch.float32, memory_format=memory_format).div_(127.5).sub_(1.0)
    return batch.to(torch.float32, memory_format=memory_format)


class Trainer:
    """Trains one iVGAN with one loss variant on an iterator of real batches."""

    def __init__(
        self,
        model: ModelConfig,
        variant: Variant,
        train: TrainConfig,
        device: str | torch.device | None = None,
    ) -> None:
        self.model_cfg, self.variant, self.train_cfg = model, variant, train
        self.device = torch.device(device) if device is not None else pick_device(train.device)
        torch.manual_seed(train.seed)
        self.generator = Generator(model).to(self.device)
        self.critic = Critic(model, spectral_norm=variant.spectral_norm, layer_norm=variant.layer_norm).to(
            self.device
        )
        self.ema = GeneratorEMA(self.generator, train.ema_kimg, train.ema_rampup) if train.ema else None
        # the critic's minibatch-std groups are consecutive clips: score reals and fakes in one batch only when a
        # group never straddles the two halves
        self.joint_scoring = not model.minibatch_std or train.batch_size % model.minibatch_std == 0
        # CUDA: one fused kernel per optimiser step instead of a dozen launches per parameter; CPU as before
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=train.lr, betas=train.betas, **fused)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=train.lr * train.critic_lr_ratio,
                                      betas=train.betas, **fused)
        # Noise and interpolation weights come from the trainer's own generator, saved in checkpoints.
        self.rng = torch.Generator(device=self.device)
        self.rng.manual_seed(train.seed + 1)
        self.use_bf16 = train.bf16 and self.device.type == "cuda"
        # bf16 also for the critic pass of the gradient penalty; its norms and the penalty stay fp32
        self.penalty_autocast: torch.dtype | None = torch.bfloat16 if self.use_bf16 else None
        # CUDA: real batches go to the device on a side stream, the next one while the current one trains
        self.copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.input_format = torch.contiguous_format  # layout of real batches on the device
        self.iteration = 0
        self.critic_updates = 0
        self.generator_updates = 0

    # ------------------------------------------------------------------ training
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.use_bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _critic_update(self, real: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b = real.shape[0]
        with torch.no_grad(), self._autocast():
            fake = self.generator(self.generator.sample_z(b, self.device, self.rng))
        with self._autocast():
            if self.joint_scoring:  # one pass over reals then fakes; minibatch-std groups stay within each half
                scores = self.critic(torch.cat([real, fake.to(real.dtype)])).float()
            else:
                scores = torch.cat([self.critic(real), self.critic(fake.to(real.dtype))]).float()
        d_real, d_fake = scores[:b], scores[b:]
        wasserstein = d_real.mean() - d_fake.mean()
        loss = -wasserstein
        zero = torch.zeros((), device=self.device)
        penalty, norms = zero, zero
        if self.variant.has_penalty:
            penalty, norms = gradient_penalty(self.critic, real, fake.float(), self.variant, self.rng,
                                              autocast_dtype=self.penalty_autocast)
            loss = loss + penalty
        drift = drift_penalty(d_real, self.variant) if self.variant.has_drift else zero
        loss = loss + drift
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        self.critic_updates += 1
        return loss.detach(), wasserstein.detach(), penalty.detach(), drift.detach(), norms.mean()

    def _generator_update(self, b: int) -> torch.Tensor:
        self.critic.requires_grad_(False)
        try:
            with self._autocast():
                fake = self.generator(self.generator.sample_z(b, self.device, self.rng))
                loss = -self.critic(fake).float().mean()
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
        finally:
            self.critic.requires_grad_(True)
        self.generator_updates += 1
        return loss.detach()

    def _stage(self, batch: torch.Tensor) -> torch.Tensor:
        """Start a real batch's copy to the device: on CUDA on the copy stream, so that it overlaps the
        update running meanwhile; on the CPU there is nothing to do ahead."""
        if self.copy_stream is None:
            return batch
        with torch.cuda.stream(self.copy_stream):
            return to_device(batch, self.device)

    def _real(self, staged: torch.Tensor) -> torch.Tensor:
        """A staged batch in model range, on the compute stream (after its copy has landed)."""
        if self.copy_stream is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_stream(self.copy_stream)
            staged.record_stream(stream)  # allocated on the copy stream, used and freed on this one
        return to_model_range(staged, self.device, self.input_format)

    def train_iteration(self, batches: Iterator[torch.Tensor]) -> dict[str, float]:
        """Run one iteration; return its metrics. Raises :class:`TrainingDiverged` on a non-finite loss and
        :class:`TrainingOutOfMemory` when the device runs out of memory.

        ``data_wait_s`` is the time spent waiting in ``next(batches)`` alone.
        """
        try:
            return self._train_iteration(batches)
        except torch.cuda.OutOfMemoryError as e:
            reason = f"{self.device}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        # raised outside the handler, so the traceback (and the tensors its frames hold) is released first
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        raise TrainingOutOfMemory(self.iteration + 1, reason)

    def _train_iteration(self, batches: Iterator[torch.Tensor]) -> dict[str, float]:
        start = time.perf_counter()
        self.generator.train()
        self.critic.train()
        data_wait = 0.0
        parts: list[tuple[torch.Tensor, ...]] = []
        n_critic = self.train_cfg.n_critic

        def fetch() -> torch.Tensor:
            nonlocal data_wait
            t0 = time.perf_counter()
            batch = next(batches)
            data_wait += time.perf_counter() - t0
            return self._stage(batch)

        staged = fetch()
        for i in range(n_critic):
            real = self._real(staged)
            if i + 1 < n_critic:  # within this iteration only: every batch is drawn by the call that uses it
                staged = fetch()
            parts.append(self._critic_update(real))
        g_loss = self._generator_update(self.train_cfg.batch_size)
        if self.ema is not None:  # clips the generator trained on before this update: generator_updates - 1 batches
            b = self.train_cfg.batch_size
            self.ema.update(self.generator, b, (self.generator_updates - 1) * b)
        means = torch.stack([torch.stack(p) for p in parts]).mean(0)
        # the losses come from before the last steps: the weights after them are checked too, so that an
        # evaluation or a checkpoint never sees a non-finite network (the EMA follows the generator's weights)
        weights = torch.nn.utils.get_total_norm([*self.generator.parameters(), *self.critic.parameters()])
        values = torch.cat([means, g_loss.view(1), weights.view(1)]).tolist()  # the one device sync of the iteration
        self.iteration += 1
        names = ("critic_loss", "wasserstein", "penalty", "drift", "grad_norm", "generator_loss", "weight_norm")
        metrics = dict(zip(names, values, strict=True))
        if not all(np.isfinite(v) for v in metrics.values()):
            raise TrainingDiverged(self.iteration, metrics)
        del metrics["weight_norm"]
        metrics.update(
            iteration=self.iteration,
            critic_updates=self.critic_updates,
            generator_updates=self.generator_updates,
            paper_steps=self.critic_updates + self.generator_updates,
            iter_time_s=time.perf_counter() - start,
            data_wait_s=data_wait,
        )
        return metrics

    def fit(self, batches: Iterator[torch.Tensor], iterations: int) -> list[dict[str, float]]:
        """Train for ``iterations`` more iterations; return their metrics."""
        return [self.train_iteration(batches) for _ in range(iterations)]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this trainer is (tensors and plain data only): fed the same
        batches, a loaded trainer repeats this one bit for bit. The data stream is the caller's (vidgan's readers
        reopen it with a fresh order, :func:`vidgan.data.resume_seed`)."""
        np_state = np.random.get_state()
        return {
            "version": CHECKPOINT_VERSION,
            "config": {
                "model": self.model_cfg.model_dump(),
                "variant": self.variant.model_dump(),
                "train": self.train_cfg.model_dump(),
            },
            "counters": {
                "iteration": self.iteration,
                "critic_updates": self.critic_updates,
                "generator_updates": self.generator_updates,
            },
            "generator": self.generator.state_dict(),
            **({"generator_ema": self.ema.state_dict()} if self.ema is not None else {}),
            "critic": self.critic.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "rng": {
                "trainer": self.rng.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
                "python": _python_state_to_plain(random.getstate()),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore weights, optimisers, counters and every RNG from :meth:`state_dict`.

        The loss variant, ``n_critic`` and the optimisers' lr and betas stay those of this trainer's
        configs (equal to the checkpoint's on a plain resume; PBT changes them between trials).
        """
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"unsupported checkpoint version {state.get('version')!r}")
        self.generator.load_state_dict(state["generator"])
        if self.ema is not None:  # a checkpoint without an average (written before it, or ema off) starts it afresh
            self.ema.load_state_dict(state.get("generator_ema", state["generator"]))
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        # The optimisers' moments come from the checkpoint, their hyperparameters from this trainer's config:
        # a PBT exploit restores another trial's checkpoint under a perturbed lr/betas, which must win.
        self.apply_hyperparameters()
        for key, value in state["counters"].items():
            setattr(self, key, int(value))
        rng = state["rng"]
        saved = rng["trainer"].cpu()
        if saved.numel() == self.rng.get_state().numel():
            self.rng.set_state(saved)
        else:  # written on another kind of device (a CUDA generator's state is 16 bytes, a CPU one's ~5 KB)
            self.rng.manual_seed(self.train_cfg.seed + 1 + 7919 * self.iteration)
            warnings.warn(f"the checkpoint's noise generator was saved on another kind of device than "
                          f"{self.device.type}: reseeded from (seed, iteration); the weights, optimisers and "
                          "counters are exact, the noise draws from here on differ", stacklevel=2)
        torch.set_rng_state(rng["torch"].cpu())
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        random.setstate(_python_state_from_plain(rng["python"]))

    def apply_hyperparameters(self) -> None:
        """Set both optimisers' lr and betas from ``train_cfg`` (after loading their state)."""
        cfg = self.train_cfg
        for opt, lr in ((self.opt_g, cfg.lr), (self.opt_d, cfg.lr * cfg.critic_lr_ratio)):
            for group in opt.param_groups:
                group["lr"] = lr
                group["betas"] = tuple(cfg.betas)

    def save(self, path: str | os.PathLike) -> Path | str:
        """Write a checkpoint whole or not at all, to a local path (:func:`vidgan.files.atomic_write`; returns its
        Path) or an object-store URI (:func:`vidgan.storage.write_bytes`; returns the URI)."""
        state = self.state_dict()
        if storage.is_remote(path):
            storage.write_bytes(str(path), storage.torch_bytes(state))
            return str(path)
        return atomic_write(storage.local_path(path), lambda f: torch.save(state, f))

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device | None = None) -> Trainer:
        """A trainer restored from a checkpoint (``torch.load(weights_only=True)``: no arbitrary pickles)."""
        state = read_checkpoint(path)
        with _unfit(path):
            model, variant, train = configs_from_checkpoint(state)
            on = torch.device(device) if device is not None else pick_device(train.device)
            # a 2 KB file can ask for 500 GiB: checked before allocating
            check_fits(model, train.batch_size, on, "training", f"checkpoint {_shown(path)}")
            trainer = cls(model, variant, train, device=device)
            trainer.load_state_dict(state)
        return trainer


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint's dict on the CPU, admitting only tensors and plain data, and check its version.

    Raises :class:`CheckpointError` naming the file for anything else (missing, empty, truncated, a pickle of
    other objects, which is refused without running any of it, a dict of another version).
    """
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses anyway
            warnings.simplefilter("ignore")
            source = io.BytesIO(storage.read_bytes(str(path))) if storage.is_remote(path) else storage.local_path(path)
            state = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {_shown(path)} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {_shown(path)} is a directory, not a file") from None
    except OSError as e:  # an object store that cannot be reached or read
        raise CheckpointError(f"checkpoint {_shown(path)} cannot be read: {_first_line(e)}") from None
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():  # torch's refusal; its advice to disable the check is not repeated
            raise CheckpointError(
                f"checkpoint {_shown(path)} refused: it holds Python objects other than tensors and plain data, which "
                "vidgan never writes (possibly malicious); nothing in it was run"
            ) from None
        raise CheckpointError(f"checkpoint {_shown(path)} is not readable: {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - any parse failure of an untrusted file means "not a checkpoint"
        detail = "empty file" if isinstance(e, EOFError) and not str(e) else _first_line(e)
        raise CheckpointError(f"checkpoint {_shown(path)} is truncated or not a torch checkpoint ({detail})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {_shown(path)} is not a vidgan checkpoint (holds a {type(state).__name__})")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {_shown(path)} has checkpoint version {state.get('version')!r}; this vidgan reads version "
            f"{CHECKPOINT_VERSION}"
        )
    return state


def _shown(path: str | os.PathLike) -> str:
    """A checkpoint's location for messages, without the credentials a URI may carry."""
    return storage.redact_uri(str(path))


def _first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0][:200]
    if "weights_only" in text:
        text = ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


@contextlib.contextmanager
def _unfit(path: str | os.PathLike) -> Iterator[None]:
    """Turn errors of building models from a checkpoint's contents into :class:`CheckpointError`."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        if isinstance(e, CheckpointError | ModelTooLarge):
            raise
        detail = f"missing {e}" if isinstance(e, KeyError) else _first_line(e)
        raise CheckpointError(f"checkpoint {_shown(path)} is not a usable vidgan checkpoint ({detail})") from None


#: fields added after checkpoints were first written, with the value every older checkpoint was trained with (the
#: defaults changed with them: an older checkpoint must not resume under the new ones). Before ``edges``, ``output``
#: and ``minibatch_std`` existed the generator padded its transposed convolutions with zeros and ended in tanh, and
#: the critic had no minibatch-std map.
_MODEL_FIELDS_BEFORE = {"critic_head": "ivgan", "edges": "zero", "output": "tanh", "minibatch_std": 0}
_TRAIN_FIELDS_BEFORE = {"critic_lr_ratio": 1.0}


def configs_from_checkpoint(state: dict[str, Any]) -> tuple[ModelConfig, Variant, TrainConfig]:
    cfg = state["config"]
    return (
        ModelConfig.model_validate({**_MODEL_FIELDS_BEFORE, **cfg["model"]}),
        Variant.model_validate(cfg["variant"]),
        TrainConfig.model_validate({**_TRAIN_FIELDS_BEFORE, **cfg["train"]}),
    )


def load_generator(
    path: str | os.PathLike, device: str | torch.device = "cpu", ema: bool = True, batch_size: int = 1,
    eval_frames: int | None = None,
) -> tuple[Generator, ModelConfig]:
    """The generator of a checkpoint (for sampling and FVD), with its model config: its moving average
    (``generator_ema``) when it has one and ``ema``, else the raw weights. Refused before it is built when sampling
    ``batch_size`` clips at once, or with ``eval_frames`` the FVD evaluation of that many frames at that batch
    (:func:`vidgan.budget.check_evaluation`), would not fit ``device``."""
    state = read_checkpoint(path)
    with _unfit(path):
        model, _, _ = configs_from_checkpoint(state)
        check_fits(model, batch_size, device, "sampling", f"checkpoint {_shown(path)}")  # before allocating (budget)
        if eval_frames is not None:  # and the I3D scoring its clips
            check_evaluation(model, batch_size, eval_frames, device, f"the FVD evaluation of checkpoint {_shown(path)}",
                             advice="lower --batch-size")
        gen = Generator(model)
        gen.load_state_dict(state["generator_ema" if ema and "generator_ema" in state else "generator"])
    return gen.to(device).eval(), model


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_plain(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
