"""The pyarrow stream, the shared re-batching / shuffle buffer, trial resources, and the trainer fed by it."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from videogen import write_video

from tune_jobs.resources import trial_resources
from vidgan.data import arrow_clip_batches, rebatch
from vidgan.ingest import IngestConfig, ingest


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    src = tmp_path_factory.mktemp("src")
    for i in range(3):
        write_video(src / f"v{i}.mp4", frames=64, width=48, height=32)
    out = tmp_path_factory.mktemp("shards")
    ingest([str(src)], out, IngestConfig(frames=16, size=32, row_group_clips=3, shard_mb=0.05, parallel="local"))
    return str(out)  # 12 clips in several shards


def test_arrow_stream_shapes_and_epochs(shards: str) -> None:
    it = arrow_clip_batches(shards, 5, seed=0)
    batches = list(itertools.islice(it, 7))  # 35 clips: about three epochs of 12
    assert all(b.shape == (5, 3, 16, 32, 32) and b.dtype == torch.uint8 for b in batches)
    f = next(arrow_clip_batches(shards, 4, seed=0, as_float=True, flip=True))
    assert f.dtype == torch.float32 and f.min() >= -1 and f.max() <= 1


def test_arrow_stream_covers_every_clip_and_is_seeded(shards: str) -> None:
    ordered = torch.cat(list(itertools.islice(arrow_clip_batches(shards, 4, shuffle=False), 3)))
    shuffled = torch.cat(list(itertools.islice(arrow_clip_batches(shards, 4, seed=1), 3)))
    key = lambda x: sorted(c.sum().item() for c in x)  # noqa: E731
    # The buffer spans epoch boundaries, so 12 draws are not exactly one epoch: check membership/coverage.
    # (the three test videos are identical: 4 distinct clips, each 3 times)
    assert set(key(shuffled)) == set(key(ordered)) and len(set(key(ordered))) == 4
    assert not torch.equal(ordered, shuffled)
    again = torch.cat(list(itertools.islice(arrow_clip_batches(shards, 4, seed=1), 3)))
    assert torch.equal(shuffled, again)


def test_rebatch_buffer_and_flip() -> None:
    clips = np.arange(10, dtype=np.uint8)[:, None, None, None, None] * np.ones((1, 2, 2, 3, 3), np.uint8)
    clips[:, :, :, 0] = 200  # left column marks orientation
    chunks = iter([clips[:3], clips[3:7], clips[7:]])
    out = list(rebatch(chunks, 4, shuffle=True, buffer=6, rng=np.random.default_rng(0)))
    assert [len(b) for b in out] == [4, 4]  # the last 2 clips wait in the buffer for the next epoch
    seen = np.concatenate(out)[:, 0, 0, 1, 0]
    assert len(set(seen.tolist())) == 8
    plain = list(rebatch(iter([clips]), 5, shuffle=False, buffer=0, rng=np.random.default_rng(0)))
    assert plain[0][:, 0, 0, 1, 0].tolist() == [0, 1, 2, 3, 4]
    flipped = np.concatenate(list(rebatch(iter([clips]), 10, shuffle=False, buffer=0,
                                          rng=np.random.default_rng(3), flip=True)))
    right = flipped[:, 0, 0, -1, 0] == 200
    assert right.any() and (~right).any()  # some mirrored, some not
    assert (flipped[right][:, :, :, -1] == 200).all()


def test_trial_resources_bundles() -> None:
    pgf = trial_resources(cpu=1, gpu=0.5, data_cpu=1)
    assert pgf.bundles == [{"CPU": 1, "GPU": 0.5}, {"CPU": 1.0}]
    assert trial_resources(cpu=2, data_cpu=0).bundles == [{"CPU": 2}]
    with pytest.raises(ValueError):
        trial_resources(cpu=-1)


def test_stream_feeds_trainer(shards: str, tmp_path: Path) -> None:
    from vidgan.config import ModelConfig, TrainConfig
    from vidgan.trainer import Trainer
    from vidgan.variants import get_variant

    trainer = Trainer(ModelConfig(frames=16, size=32, width=4), get_variant("gp"),
                      TrainConfig(batch_size=2, n_critic=2), device="cpu")
    m = trainer.train_iteration(arrow_clip_batches(shards, 2, flip=True, seed=0))
    assert m["iteration"] == 1 and np.isfinite(m["critic_loss"]) and m["data_wait_s"] >= 0


def test_train_cli_with_resume(shards: str, tmp_path: Path) -> None:
    from vidgan.cli import main

    ck = tmp_path / "ck.pt"
    args = ["train", "--data", shards, "--width", "4", "--batch-size", "2", "--n-critic", "1",
            "--checkpoint", str(ck), "--log-every", "1"]
    assert main([*args, "--iterations", "1"]) == 0 and ck.exists()
    assert main([*args, "--iterations", "2", "--resume"]) == 0
    from vidgan.trainer import Trainer

    assert Trainer.load(ck).iteration == 2
    assert main(["train", "--data", str(tmp_path / "none")]) == 2
