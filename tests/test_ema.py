"""The generator's moving average: StyleGAN2-ADA's half-life and ramp-up, buffers, exact resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vidgan.config import ModelConfig, TrainConfig
from vidgan.ema import GeneratorEMA, ema_beta
from vidgan.synthetic import synthetic_batches
from vidgan.trainer import Trainer, load_generator, read_checkpoint
from vidgan.variants import get_variant

TINY = ModelConfig(frames=16, size=32, width=4, z_dim=8)
# a half-life of 6 clips = 2 updates of 3 clips, no ramp-up: beta = 0.5 ** (3 / 6), far from 0 and 1
TRAIN = TrainConfig(batch_size=3, n_critic=2, seed=7, ema_kimg=0.006, ema_rampup=None)


def test_beta_is_stylegan2_ada_half_life_with_ramp_up() -> None:
    # no ramp-up: after ema_nimg / batch updates the old average keeps exactly half its weight
    beta = ema_beta(batch=32, cur_nimg=10**6, ema_kimg=10, ema_rampup=None)
    assert beta ** (10_000 / 32) == pytest.approx(0.5, rel=1e-12)
    # ramp-up: the half-life is min(ema_kimg * 1000, cur_nimg * rampup) clips
    assert ema_beta(32, 2000, 10, 0.05) == pytest.approx(0.5 ** (32 / 100), rel=1e-12)
    assert ema_beta(32, 10**7, 10, 0.05) == pytest.approx(0.5 ** (32 / 10_000), rel=1e-12)
    assert ema_beta(32, 0, 10, 0.05) == 0.0  # the first update copies the generator


def test_update_is_the_moving_average_and_copies_buffers() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = GeneratorEMA(net, ema_kimg=0.004, ema_rampup=None)  # half-life 4 clips, batch 2: beta = 1/sqrt(2)
    start = [p.detach().clone() for p in ema.module.parameters()]
    target = []
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
            target.append(p.detach().clone())
        net[1].running_mean.fill_(3.0)
    betas = [ema.update(net, batch=2, cur_nimg=100) for _ in range(4)]
    beta = 0.5 ** 0.5
    assert betas == [pytest.approx(beta)] * 4
    for s, t, e in zip(start, target, ema.module.parameters(), strict=True):
        # four updates towards a fixed target: t + (s - t) beta^4, and beta^4 = 1/4 (two half-lives)
        torch.testing.assert_close(e, t + (s - t) * 0.25, rtol=0, atol=1e-6)
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 3.0))  # buffers copied, not averaged
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert ema.update(net, batch=2, cur_nimg=0) > 0  # without ramp-up no copy at the start


def test_trainer_keeps_the_average_and_first_update_copies_with_ramp_up() -> None:
    ramped = Trainer(TINY, get_variant("gp"), TrainConfig(batch_size=3, n_critic=1, seed=1))
    ramped.fit(synthetic_batches(TINY, 3), 1)
    for a, b in zip(ramped.ema.module.parameters(), ramped.generator.parameters(), strict=True):
        assert torch.equal(a, b)  # cur_nimg = 0 at the first update: beta = 0

    trainer = Trainer(TINY, get_variant("gp"), TRAIN)
    before = [p.detach().clone() for p in trainer.generator.parameters()]
    trainer.fit(synthetic_batches(TINY, 3), 3)
    ema, gen = list(trainer.ema.module.parameters()), list(trainer.generator.parameters())
    assert any(not torch.equal(e, g) for e, g in zip(ema, gen, strict=True))
    assert any(not torch.equal(e, b) for e, b in zip(ema, before, strict=True))
    assert not trainer.ema.module.training

    off = Trainer(TINY, get_variant("gp"), TrainConfig(batch_size=3, n_critic=1, ema=False))
    off.fit(synthetic_batches(TINY, 3), 1)
    assert off.ema is None and "generator_ema" not in off.state_dict()


def test_resume_with_the_average_is_bit_identical(tmp_path) -> None:
    straight = Trainer(TINY, get_variant("gp"), TRAIN)
    straight.fit(synthetic_batches(TINY, 3, seed=3), 4)

    first = Trainer(TINY, get_variant("gp"), TRAIN)
    first.fit(synthetic_batches(TINY, 3, seed=3), 2)
    path = first.save(tmp_path / "state.pt")
    assert "generator_ema" in read_checkpoint(path)
    del first
    resumed = Trainer.load(path)
    resumed.fit(synthetic_batches(TINY, 3, seed=3, start=resumed.critic_updates), 2)

    a, b = straight.ema.state_dict(), resumed.ema.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for x, y in zip(straight.generator.parameters(), resumed.generator.parameters(), strict=True):
        assert torch.equal(x, y)
    # load_generator gives the average by default, the raw weights on request
    path = resumed.save(tmp_path / "end.pt")
    ema_gen, _ = load_generator(path)
    raw_gen, _ = load_generator(path, ema=False)
    assert all(torch.equal(x, y) for x, y in zip(ema_gen.parameters(), resumed.ema.module.parameters(), strict=True))
    assert all(torch.equal(x, y) for x, y in zip(raw_gen.parameters(), resumed.generator.parameters(), strict=True))


def test_a_checkpoint_without_an_average_starts_it_from_the_generator(tmp_path) -> None:
    trainer = Trainer(TINY, get_variant("gp"), TRAIN)
    trainer.fit(synthetic_batches(TINY, 3), 2)
    state = trainer.state_dict()
    del state["generator_ema"]
    other = Trainer(TINY, get_variant("gp"), TRAIN)
    other.load_state_dict(state)
    for e, g in zip(other.ema.module.parameters(), trainer.generator.parameters(), strict=True):
        assert torch.equal(e, g)


def test_sample_videos_show_the_generator_fvd_scores() -> None:
    """eval.generator picks the generator `fvd` scores; the sample videos follow it (they once always showed the
    moving average, so a sweep scored on the raw weights showed pictures of another generator)."""
    from tune_jobs.trainable import sampling_generator
    from vidgan.config import ModelConfig, TrainConfig
    from vidgan.trainer import Trainer
    from vidgan.variants import get_variant

    trainer = Trainer(ModelConfig(frames=16, size=32, width=4, z_dim=8), get_variant("gp"), TrainConfig(batch_size=2))
    assert sampling_generator(trainer, "ema") is trainer.ema.module
    assert sampling_generator(trainer, "raw") is trainer.generator
    no_average = Trainer(ModelConfig(frames=16, size=32, width=4, z_dim=8), get_variant("gp"),
                         TrainConfig(batch_size=2, ema=False))
    assert sampling_generator(no_average, "ema") is no_average.generator
