"""The trainer: every preset trains, iterations are counted, checkpoints resume exactly, divergence stops."""

from __future__ import annotations

import pickle

import pytest
import torch

from vidgan.config import ModelConfig, TrainConfig
from vidgan.synthetic import synthetic_batches
from vidgan.trainer import (
    Trainer,
    TrainingDiverged,
    TrainingOutOfMemory,
    limit_gpu_memory,
    load_generator,
    read_checkpoint,
    to_model_range,
)
from vidgan.variants import PRESETS, get_variant

TINY = ModelConfig(frames=16, size=32, width=4, z_dim=8)
TRAIN = TrainConfig(batch_size=3, n_critic=2, seed=7)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_trains_with_finite_losses(name: str) -> None:
    trainer = Trainer(TINY, get_variant(name), TRAIN)
    metrics = trainer.fit(synthetic_batches(TINY, TRAIN.batch_size), 2)
    last = metrics[-1]
    for key in ("critic_loss", "wasserstein", "penalty", "drift", "generator_loss", "grad_norm"):
        assert torch.isfinite(torch.tensor(last[key])), key
    assert (last["iteration"], last["critic_updates"], last["generator_updates"]) == (2, 4, 2)
    assert last["paper_steps"] == 6
    assert last["iter_time_s"] > 0 and last["data_wait_s"] >= 0
    if PRESETS[name].penalty == "none":
        assert last["penalty"] == 0.0
    else:
        # one-sided is zero while every gradient norm is below 1, as at initialisation
        assert last["grad_norm"] > 0.0
        assert last["penalty"] > 0.0 or PRESETS[name].penalty == "one_sided"


def test_training_changes_both_networks() -> None:
    trainer = Trainer(TINY, get_variant("gp"), TRAIN)
    g0 = [p.detach().clone() for p in trainer.generator.parameters()]
    d0 = [p.detach().clone() for p in trainer.critic.parameters()]
    trainer.fit(synthetic_batches(TINY, TRAIN.batch_size), 1)
    assert any(not torch.equal(a, b) for a, b in zip(g0, trainer.generator.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, trainer.critic.parameters(), strict=True))


def test_no_generator_graph_in_critic_updates_and_no_critic_grads_in_generator_update() -> None:
    trainer = Trainer(TINY, get_variant("gp"), TRAIN)
    batch = to_model_range(next(synthetic_batches(TINY, 3)), trainer.device)
    trainer._critic_update(batch)
    assert all(p.grad is None for p in trainer.generator.parameters())
    trainer.opt_d.zero_grad(set_to_none=True)
    trainer._generator_update(3)
    assert all(p.grad is None for p in trainer.critic.parameters())
    assert all(p.requires_grad for p in trainer.critic.parameters())  # restored afterwards
    assert any(p.grad is not None for p in trainer.generator.parameters())


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {**{f"g.{k}": v for k, v in trainer.generator.state_dict().items()},
            **{f"d.{k}": v for k, v in trainer.critic.state_dict().items()}}


@pytest.mark.parametrize("name", ["gp", "sn_gp"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, name: str) -> None:
    straight = Trainer(TINY, get_variant(name), TRAIN)
    straight.fit(synthetic_batches(TINY, TRAIN.batch_size, seed=3), 4)

    first = Trainer(TINY, get_variant(name), TRAIN)
    first.fit(synthetic_batches(TINY, TRAIN.batch_size, seed=3), 2)
    path = first.save(tmp_path / "ckpt" / "state.pt")
    assert [p.name for p in path.parent.iterdir()] == ["state.pt"]  # no temp file left behind
    del first
    torch.manual_seed(12345)  # disturb the global RNG: the checkpoint must restore it

    resumed = Trainer.load(path)
    assert resumed.iteration == 2 and resumed.critic_updates == 4
    resumed.fit(synthetic_batches(TINY, TRAIN.batch_size, seed=3, start=resumed.critic_updates), 2)

    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.generator_updates == straight.generator_updates == 4


def test_checkpoint_holds_config_and_loads_weights_only(tmp_path) -> None:
    trainer = Trainer(TINY, get_variant("drift"), TRAIN)
    trainer.fit(synthetic_batches(TINY, 3), 1)
    path = trainer.save(tmp_path / "c.pt")
    state = read_checkpoint(path)  # torch.load(weights_only=True)
    assert state["config"]["variant"]["drift_weight"] == 1e-4
    assert state["config"]["model"] == TINY.model_dump()
    gen, cfg = load_generator(path)
    assert cfg == TINY
    assert gen(torch.randn(2, TINY.z_dim)).shape == (2, 3, 16, 32, 32)


def test_checkpoint_from_before_the_critic_head_option_loads_with_ivgans_head(tmp_path) -> None:
    """A checkpoint written before ModelConfig had ``critic_head`` (and TrainConfig ``critic_lr_ratio``) was trained
    with iVGAN's head and one lr for both networks, and one from before ``edges``/``output``/``minibatch_std`` with
    zero-padded transposed convolutions, a tanh output and no minibatch-std map: it loads as such, whatever the
    defaults are now."""
    old_networks = {"critic_head": "ivgan", "edges": "zero", "output": "tanh", "minibatch_std": 0}
    model = TINY.model_copy(update=old_networks)
    trainer = Trainer(model, get_variant("gp"), TRAIN.model_copy(update={"critic_lr_ratio": 1.0}))
    state = trainer.state_dict()
    for field in old_networks:
        del state["config"]["model"][field]
    del state["config"]["train"]["critic_lr_ratio"]
    torch.save(state, tmp_path / "old.pt")
    restored = Trainer.load(tmp_path / "old.pt")
    assert {k: getattr(restored.model_cfg, k) for k in old_networks} == old_networks
    assert restored.train_cfg.critic_lr_ratio == 1.0
    assert [g["lr"] for g in restored.opt_d.param_groups] == [TRAIN.lr]
    assert torch.equal(restored.critic.head.weight, trainer.critic.head.weight)


def test_non_finite_loss_raises_training_diverged() -> None:
    trainer = Trainer(TINY, get_variant("gp"), TRAIN)
    good = synthetic_batches(TINY, 3)
    trainer.fit(good, 1)

    def poisoned():
        while True:
            yield torch.full((3, 3, 16, 32, 32), float("nan"))

    with pytest.raises(TrainingDiverged, match="iteration 2") as info:
        trainer.train_iteration(poisoned())
    assert info.value.iteration == 2
    assert "critic_loss" in str(info.value)


def test_a_checkpoint_from_another_kind_of_device_resumes_with_a_warning() -> None:
    """A CUDA generator's state (16 bytes) cannot be set into a CPU one: a GPU checkpoint resumed on a CPU
    reseeds the trainer's noise (and says so) instead of failing as an unusable checkpoint."""
    trainer = Trainer(TINY, get_variant("gp"), TRAIN)
    trainer.fit(synthetic_batches(TINY, 3), 1)
    state = trainer.state_dict()
    state["rng"]["trainer"] = torch.zeros(16, dtype=torch.uint8)  # the size of a CUDA (Philox) generator's state
    resumed = Trainer(TINY, get_variant("gp"), TRAIN)
    with pytest.warns(UserWarning, match="another kind of device"):
        resumed.load_state_dict(state)
    assert resumed.iteration == 1
    assert torch.equal(next(resumed.generator.parameters()), next(trainer.generator.parameters()))
    resumed.fit(synthetic_batches(TINY, 3, start=1), 1)


def test_weights_made_non_finite_by_the_last_step_raise_at_that_iteration() -> None:
    """The losses are computed before the steps; a generator step that leaves a NaN weight must still end the
    iteration as diverged, before an evaluation (or a checkpoint) would use those weights."""
    trainer = Trainer(TINY, get_variant("gp"), TRAIN)
    batches = synthetic_batches(TINY, 3)
    trainer.fit(batches, 1)
    step = trainer.opt_g.step

    def poisoning_step(*args, **kwargs):
        out = step(*args, **kwargs)
        with torch.no_grad():
            next(trainer.generator.parameters()).view(-1)[0] = float("nan")
        return out

    trainer.opt_g.step = poisoning_step
    with pytest.raises(TrainingDiverged, match="iteration 2: non-finite weight_norm=nan"):
        trainer.train_iteration(batches)


def test_uint8_batches_are_mapped_to_model_range() -> None:
    batch = torch.tensor([0, 255, 128], dtype=torch.uint8)
    out = to_model_range(batch, torch.device("cpu"))
    assert out.dtype == torch.float32
    assert out.tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)


def test_channels_last_views_are_laid_out_channels_first() -> None:
    clips = torch.randint(0, 256, (2, 16, 8, 8, 3), dtype=torch.uint8)  # [B, T, H, W, C] as read
    view = clips.permute(0, 4, 1, 2, 3)
    out = to_model_range(view, torch.device("cpu"))
    assert out.is_contiguous() and out.shape == (2, 3, 16, 8, 8)
    assert torch.equal(out, view.float() / 127.5 - 1)


def test_bad_train_config_is_refused() -> None:
    with pytest.raises(ValueError):
        TrainConfig(betas=(0.5, 1.0))
    with pytest.raises(ValueError):
        TrainConfig(n_critic=0)
    with pytest.raises(ValueError):
        ModelConfig(frames=8)


def test_restore_under_a_new_config_keeps_the_moments_and_takes_the_new_lr_and_betas(tmp_path) -> None:
    # What a PBT exploit does: another trial's checkpoint, restored by a trainer built from a perturbed config.
    donor = Trainer(TINY, get_variant("gp"), TRAIN)
    donor.fit(synthetic_batches(TINY, TRAIN.batch_size), 2)
    path = donor.save(tmp_path / "donor.pt")
    perturbed = TRAIN.model_copy(update={"lr": TRAIN.lr * 1.2, "betas": (0.4, 0.99)})
    clone = Trainer(TINY, get_variant("gp", penalty_weight=8.0), perturbed)
    clone.load_state_dict(read_checkpoint(path))
    for opt, ref, ratio in ((clone.opt_g, donor.opt_g, 1), (clone.opt_d, donor.opt_d, TRAIN.critic_lr_ratio)):
        assert all(g["lr"] == pytest.approx(TRAIN.lr * 1.2 * ratio) and g["betas"] == (0.4, 0.99)
                   for g in opt.param_groups)
        first = next(iter(ref.state))
        index = list(ref.state).index(first)
        assert torch.equal(list(opt.state.values())[index]["exp_avg"], ref.state[first]["exp_avg"])
    assert clone.iteration == 2 and clone.variant.penalty_weight == 8.0
    # a plain resume (same config) is unchanged by this
    same = Trainer.load(path)
    assert all(g["lr"] == TRAIN.lr and g["betas"] == TRAIN.betas for g in same.opt_g.param_groups)


def test_critic_lr_ratio_sets_the_critics_lr_and_survives_a_restore(tmp_path) -> None:
    """TTUR: the critic's lr is lr x critic_lr_ratio, at construction and after a PBT-style restore under a new lr."""
    cfg = TRAIN.model_copy(update={"critic_lr_ratio": 4.0})
    trainer = Trainer(TINY, get_variant("gp"), cfg)
    assert [g["lr"] for g in trainer.opt_d.param_groups] == [pytest.approx(4 * TRAIN.lr)]
    assert [g["lr"] for g in trainer.opt_g.param_groups] == [TRAIN.lr]
    trainer.fit(synthetic_batches(TINY, TRAIN.batch_size), 1)
    path = trainer.save(tmp_path / "ttur.pt")
    clone = Trainer(TINY, get_variant("gp"), cfg.model_copy(update={"lr": 2 * TRAIN.lr}))
    clone.load_state_dict(read_checkpoint(path))
    assert [g["lr"] for g in clone.opt_d.param_groups] == [pytest.approx(8 * TRAIN.lr)]
    assert Trainer.load(path).train_cfg.critic_lr_ratio == 4.0


# ------------------------------------------------------------------ GPU sharing and the data path (issue #10)
def test_out_of_memory_ends_the_iteration_with_a_clear_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = Trainer(TINY, get_variant("gp"), TRAIN)
    trainer.fit(synthetic_batches(TINY, 3), 1)

    def oom(real: torch.Tensor) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 11.5 GiB cap)\nmore")

    monkeypatch.setattr(trainer, "_critic_update", oom)
    with pytest.raises(TrainingOutOfMemory, match="iteration 2: cpu: CUDA out of memory. Tried") as info:
        trainer.train_iteration(synthetic_batches(TINY, 3))
    err = info.value
    assert err.iteration == 2 and "\n" not in err.reason
    assert err.__context__ is None  # raised outside the handler: the failed iteration's tensors are released
    again = pickle.loads(pickle.dumps(err))  # crosses Ray processes
    assert (again.iteration, again.reason, str(again)) == (err.iteration, err.reason, str(err))


def test_limit_gpu_memory_arguments() -> None:
    with pytest.raises(ValueError):
        limit_gpu_memory(-0.5)
    assert limit_gpu_memory(0) is None and limit_gpu_memory(1) is None and limit_gpu_memory(2) is None
    if not torch.cuda.is_available():
        assert limit_gpu_memory(0.5) is None  # a no-op without CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_limit_gpu_memory_caps_this_process() -> None:
    total = torch.cuda.get_device_properties(0).total_memory
    try:
        fraction = limit_gpu_memory(0.25)
        assert fraction is not None and 0 < fraction < 0.25
        torch.cuda.empty_cache()
        with pytest.raises(torch.cuda.OutOfMemoryError):
            torch.empty(int(0.3 * total), dtype=torch.uint8, device="cuda")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
        torch.cuda.empty_cache()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_staging_matches_to_model_range() -> None:
    """A pinned channels-last uint8 batch copied on the side stream lands as to_model_range makes it."""
    trainer = Trainer(TINY, get_variant("gp"), TRAIN.model_copy(update={"bf16": True}), device="cuda")
    clips = torch.randint(0, 256, (3, 16, 32, 32, 3), dtype=torch.uint8).pin_memory()
    view = clips.permute(0, 4, 1, 2, 3)
    real = trainer._real(trainer._stage(view))
    torch.cuda.synchronize()
    assert real.is_cuda and real.is_contiguous() and torch.equal(real.cpu(), to_model_range(view, torch.device("cpu")))
    m = trainer.fit(synthetic_batches(TINY, TRAIN.batch_size), 2)[-1]
    assert all(torch.isfinite(torch.tensor(m[k])) for k in ("critic_loss", "penalty", "generator_loss"))
    assert all(g["fused"] for opt in (trainer.opt_d, trainer.opt_g) for g in opt.param_groups)


def test_data_wait_counts_only_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """data_wait_s is the time spent in next(batches) only, not the conversion or the updates (a fake clock
    that only the iterator and the conversion move)."""
    import types

    import vidgan.trainer as trainer_module

    clock = [0.0]
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    convert = trainer_module.to_model_range

    def slow_convert(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        clock[0] += 100.0
        return convert(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "to_model_range", slow_convert)

    def waiting():
        for b in synthetic_batches(TINY, TRAIN.batch_size):
            clock[0] += 1.0
            yield b

    m = Trainer(TINY, get_variant("gp"), TRAIN).train_iteration(waiting())
    assert m["data_wait_s"] == TRAIN.n_critic * 1.0
    assert m["iter_time_s"] == TRAIN.n_critic * 101.0
