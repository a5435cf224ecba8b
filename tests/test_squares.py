"""The squares dataset (vidgan.synthetic), its learning score (vidgan.squares_score) and `vidgan ingest --synthetic`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vidgan.cli import main
from vidgan.config import ModelConfig
from vidgan.data import arrow_clip_batches
from vidgan.ingest import IngestConfig, IngestError, ingest
from vidgan.ingest.config import SyntheticSpec
from vidgan.models import Generator
from vidgan.shards import describe
from vidgan.squares_score import squares_score
from vidgan.synthetic import (
    BACKGROUND,
    MAX_SPEED,
    MAX_SQUARE_VALUE,
    MIN_SQUARE_VALUE,
    render_squares,
    square_side,
    squares_clips,
    squares_trajectories,
)
from vidgan.trainer import to_model_range
from vidgan.video import sample_clips, to_uint8_clips


def _real(n: int = 32, frames: int = 16, size: int = 32, seed: int = 0) -> np.ndarray:
    return squares_clips(n, frames, size, seed).permute(0, 2, 3, 4, 1).numpy()  # [N, T, H, W, 3]


def test_squares_bounce_inside_at_constant_speed() -> None:
    pos, colour = squares_trajectories(500, 32, 32, torch.Generator().manual_seed(1))
    span = 32 - square_side(32)
    assert pos.min() >= 0 and pos.max() <= span  # never leaves the frame
    step = pos.diff(dim=1).abs()
    assert step.max() <= MAX_SPEED and (step.sum((1, 2)) > 0).all()  # every square moves, none faster than MAX_SPEED
    speed = step.max(dim=1).values  # per clip and axis
    away_from_walls = (pos[:, 1:-1] > MAX_SPEED) & (pos[:, 1:-1] < span - MAX_SPEED)
    assert (step[:, 1:][away_from_walls] == speed[:, None, :].expand_as(step[:, 1:])[away_from_walls]).all()
    bounced = (pos.diff(dim=1).sign().diff(dim=1) != 0).any()
    assert bounced  # some squares reverse at a wall instead of sticking to it
    assert colour.min() >= MIN_SQUARE_VALUE and colour.max() <= MAX_SQUARE_VALUE


def test_squares_are_deterministic_and_dark_with_one_square() -> None:
    a, b = squares_clips(4, 16, 32, 7), squares_clips(4, 16, 32, 7)
    assert torch.equal(a, b) and not torch.equal(a, squares_clips(4, 16, 32, 8))
    fg = (a.amax(1) > BACKGROUND)  # [N, T, H, W]
    assert (fg.sum((-1, -2)) == square_side(32) ** 2).all()
    assert (a.amin(1)[~fg] == BACKGROUND).all()


def test_real_clips_score_one_and_an_untrained_generator_zero() -> None:
    real = squares_score(_real())
    assert real.one_square == 1.0 and real.smooth_motion == 1.0 and real.background_error == 0.0
    assert real.one_object == 1.0 and real.object_side == square_side(32) and real.object_fill == 1.0
    assert real.diversity > 25
    torch.manual_seed(0)
    gen = Generator(ModelConfig(frames=16, size=32, width=8, z_dim=16))
    fake = squares_score(sample_clips(gen, torch.randn(16, 16)))
    assert fake.one_square == 0.0 and fake.smooth_motion == 0.0 and fake.background_error > 50
    assert fake.one_object == 0.0 and fake.object_side > 24  # noise above the threshold nearly everywhere: no object


def test_score_fails_what_breaks_the_physics() -> None:
    clips = _real(8)
    speck = clips.copy()
    speck[0, 3, 0, 0] = 200  # one stray bright pixel on frame 3 of clip 0
    s = squares_score(speck)
    assert s.one_square == pytest.approx(1 - 1 / (8 * 16)) and s.smooth_motion == pytest.approx(7 / 8)
    t = torch.arange(16)
    steady = torch.stack([6 + t, 6 + t], -1)  # one pixel a frame along both axes, far from the walls at first
    jerky = steady + (t >= 8).long()[:, None] * 2  # skips two pixels at frame 8, away from any wall
    pair = render_squares(torch.stack([steady, jerky]), torch.tensor([[200, 100, 80]] * 2), 32)
    s = squares_score(pair.permute(0, 2, 3, 4, 1).numpy())
    assert s.one_square == 1.0 and s.smooth_motion == 0.5
    frozen = np.repeat(clips[:, :1], 16, axis=1)  # squares that never move are not motion
    assert squares_score(frozen).smooth_motion == 0.0
    big = clips.copy()
    big[2] = np.where(np.roll(big[2], 3, axis=2) > BACKGROUND, np.roll(big[2], 3, axis=2), big[2])  # two squares
    assert squares_score(big).one_square <= 1 - 16 / (8 * 16) + 1e-9
    assert squares_score(np.repeat(clips[:1], 8, axis=0)).diversity == 0.0  # one clip for every latent
    assert s.one_object == 1.0 and squares_score(speck).one_object == pytest.approx(1 - 1 / (8 * 16))


def test_the_graded_measures_say_how_far_a_blob_is_from_a_square() -> None:
    """A diamond of about the square's size: one object per frame, its side 9, its fill ~0.5, not a square;
    a disc of that size passes as one (a pixelated disc of radius 4.5 fills 85% of its 9x9 box); a blob twice the
    size reads as side 17."""
    yy, xx = np.mgrid[:32, :32]
    clips = np.full((3, 16, 32, 32, 3), BACKGROUND, np.uint8)
    for j in range(16):
        clips[0, j][abs(yy - 12) + abs(xx - 4 - j) <= 4] = 180  # a diamond moving right
        clips[1, j][(yy - 12) ** 2 + (xx - 4 - j) ** 2 <= 4.5**2] = 180  # a disc moving right
        clips[2, j][(yy - 15) ** 2 + (xx - 15) ** 2 <= 8.5**2] = 180  # a big one, still
    diamond = squares_score(clips[:1])
    assert diamond.one_square == 0.0 and diamond.one_object == 1.0
    assert diamond.object_side == pytest.approx(9.0) and diamond.object_fill == pytest.approx(41 / 81)
    disc = squares_score(clips[1:2])
    assert disc.one_square == 1.0 and disc.object_fill == pytest.approx(69 / 81)
    big = squares_score(clips[2:])
    assert big.one_square == 0.0 and big.one_object == 1.0 and big.object_side == pytest.approx(17.0)
    empty = squares_score(np.full((1, 16, 32, 32, 3), BACKGROUND, np.uint8))
    assert empty.one_object == 0.0 and empty.object_side == 0.0 and empty.object_fill == 0.0


def test_value_range_and_layout_round_trip(tmp_path: Path) -> None:
    """Shard -> model input in [-1, 1] (channels, frames in order) -> uint8 clips: the very clips drawn."""
    ingest([], tmp_path / "sq", IngestConfig(frames=16, size=32, synthetic=SyntheticSpec(clips=8, seed=3)))
    batch = next(iter(arrow_clip_batches(str(tmp_path / "sq"), 8, shuffle=False)))
    assert batch.shape == (8, 3, 16, 32, 32) and batch.dtype == torch.uint8
    x = to_model_range(batch, torch.device("cpu"))
    assert x.min().item() == pytest.approx(BACKGROUND / 127.5 - 1) and x.max().item() <= 1.0
    drawn = squares_clips(8, 16, 32, 3 * 1_000_003).permute(0, 2, 3, 4, 1).numpy()
    assert np.array_equal(to_uint8_clips(x), drawn)


def test_ingest_synthetic_writes_a_dataset_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "squares"
    args = ["ingest", "--synthetic", "squares", "--clips", "300", "--frames", "16", "--size", "32", "--seed", "2",
            "--out", str(out)]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["clips"] == 300 and first["sources_ok"] == 2  # chunks of 256
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["synthetic"] == {"kind": "squares", "clips": 300, "seed": 2}
    assert describe(str(out)).clips == 300
    assert main(args) == 0  # the same command again: resumes, nothing added
    assert json.loads(capsys.readouterr().out)["clips"] == 300
    assert main([*args[:3], "400", *args[4:]]) == 2  # another dataset into the same folder: refused
    assert "already holds clips made with" in capsys.readouterr().err
    with pytest.raises(IngestError):
        ingest([], tmp_path / "none", IngestConfig(frames=16, size=32))


def test_a_trial_reports_every_field_of_the_score_under_squares_names() -> None:
    from types import SimpleNamespace

    from tune_jobs.trainable import squares_metrics
    from vidgan.config import TrainConfig
    from vidgan.trainer import Trainer
    from vidgan.variants import get_variant

    trainer = Trainer(ModelConfig(frames=16, size=32, width=4, z_dim=8), get_variant("gp"), TrainConfig(batch_size=2))
    evaluator = SimpleNamespace(latents=lambda z_dim: torch.randn(4, z_dim, generator=torch.Generator().manual_seed(0)))
    for which in ("ema", "raw"):
        metrics = squares_metrics(trainer, evaluator, which)
        assert set(metrics) == {f"squares_{k}" for k in ("one_square", "smooth_motion", "background_error", "diversity",
                                                          "one_object", "object_side", "object_fill")}
        assert all(np.isfinite(v) for v in metrics.values())
