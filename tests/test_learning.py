"""It learns: a tiny GAN trained on the squares, read through the real shard reader, leaves the untrained
generator's grey noise far behind within a CI-sized budget.

What it checks would fail (see docs/does-it-learn.md): with the critic's loss sign flipped, with the
generator cut off from the critic's gradient, and with real clips reaching the model in [0, 255] instead of
[-1, 1], each broken in a scratch copy of the code.
"""

from __future__ import annotations

import pytest
import torch

from vidgan.config import ModelConfig, TrainConfig
from vidgan.data import arrow_clip_batches
from vidgan.ingest import IngestConfig, ingest
from vidgan.ingest.config import SyntheticSpec
from vidgan.squares_score import squares_score
from vidgan.trainer import Trainer
from vidgan.variants import get_variant
from vidgan.video import sample_clips

ITERATIONS = 150

pytestmark = pytest.mark.slow  # half a minute of training: not for `make test-fast`


@pytest.fixture(scope="module")
def squares(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("squares") / "squares-16x32"
    ingest([], out, IngestConfig(frames=16, size=32, synthetic=SyntheticSpec(clips=512, seed=0)))
    return str(out)


def test_gp_learns_the_background_and_keeps_the_clips_apart(squares: str) -> None:
    torch.set_num_threads(1)  # the suite runs two workers on two cores
    model = ModelConfig(frames=16, size=32, width=8, z_dim=32)  # the defaults otherwise, as the optimiser's
    trainer = Trainer(model, get_variant("gp"), TrainConfig(batch_size=16, seed=0), device="cpu")
    z = torch.randn(32, model.z_dim, generator=torch.Generator().manual_seed(1))
    before = squares_score(sample_clips(trainer.generator, z))
    trainer.fit(arrow_clip_batches(squares, 16, flip=True, seed=0), ITERATIONS)
    after = squares_score(sample_clips(trainer.ema.module, z))
    real = squares_score(next(iter(arrow_clip_batches(squares, 32, shuffle=False))).permute(0, 2, 3, 4, 1).numpy())
    print(f"untrained {before}\ntrained {after}\nreal {real}")
    assert before.background_error > 80  # grey noise around mid-grey, the background is 32
    assert after.background_error < 0.6 * before.background_error  # towards the dark background
    assert after.diversity > 0.1 * real.diversity  # not one clip for every latent
