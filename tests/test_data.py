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
from vidgan.shards import iter_clips


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
    key = lambda x: sorted(int(c.to(torch.int64).sum()) for c in x)  # noqa: E731
    # Unshuffled, 12 draws are the dataset's 12 clips. Shuffled, the buffer spans epoch boundaries, so 12 draws
    # are not exactly one epoch: check membership. (The three test videos are encoded alike but do not always
    # decode to identical clips on a loaded machine: 4 to 11 distinct clips of 12 seen in the shards.)
    dataset = key(torch.from_numpy(np.concatenate(list(iter_clips(shards)))))
    assert key(ordered) == dataset and set(key(shuffled)) <= set(dataset)
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


@pytest.mark.parametrize("device", ["gpu0", "cuda"])
def test_train_cli_refuses_a_device_it_cannot_use_in_one_line(shards: str, device: str, capsys) -> None:
    from vidgan.cli import main

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--data", shards, "--width", "4", "--batch-size", "2", "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vidgan train: error: --device") and err.count("\n") == 1, err


def test_train_cli_trains_the_library_defaults_for_flags_not_given(shards: str, tmp_path: Path) -> None:
    """`vidgan train` without --n-critic/--lr trains what TrainConfig() would (it once kept the paper's
    n_critic 5 after the library's default became 1 with the critic's lr x4: a mix of neither)."""
    from vidgan.cli import main
    from vidgan.config import TrainConfig
    from vidgan.trainer import Trainer

    ck = tmp_path / "ck.pt"
    assert main(["train", "--data", shards, "--width", "4", "--batch-size", "2", "--iterations", "1",
                 "--checkpoint", str(ck)]) == 0
    trained = Trainer.load(ck).train_cfg
    assert trained.model_dump() == TrainConfig(batch_size=2).model_dump()


# ------------------------------------------------------------------ batches assembled ahead (issue #10)
def _threads() -> set[str]:
    import threading

    return {t.name for t in threading.enumerate() if t.name.startswith("vidgan-")}


def test_background_producer_gives_the_same_batches_and_stops(shards: str) -> None:
    before = _threads()
    inline = list(itertools.islice(arrow_clip_batches(shards, 4, seed=2, flip=True, read_ahead=0, prefetch=0), 5))
    it = arrow_clip_batches(shards, 4, seed=2, flip=True, prefetch=2)
    ahead = list(itertools.islice(it, 5))
    assert {"vidgan-batches", "vidgan-read-ahead"} <= _threads()
    assert all(torch.equal(a, b) for a, b in zip(inline, ahead, strict=True))
    assert len({a.data_ptr() for a in ahead}) == 5  # each batch in its own buffer: the consumer may keep them
    it.close()  # stops and joins both threads
    assert _threads() == before


def test_producer_errors_reach_the_consumer() -> None:
    from types import SimpleNamespace

    from vidgan.data import batches_from_chunks

    def chunks():
        yield np.zeros((3, 2, 4, 4, 3), np.uint8)
        yield np.zeros((3, 2, 8, 8, 3), np.uint8)

    it = batches_from_chunks(SimpleNamespace(clips=6), chunks(), 2, False, False, 0, False, None, prefetch=2)
    assert next(it).shape == (2, 3, 2, 4, 4)
    with pytest.raises(ValueError, match="clip shape changed"):
        list(it)


def test_shuffle_buffer_gathers_into_the_given_array() -> None:
    from vidgan.data import ShuffleBuffer

    clips = np.arange(6, dtype=np.uint8)[:, None, None, None, None] * np.ones((1, 1, 1, 2, 3), np.uint8)
    sb = ShuffleBuffer(4, shuffle=True, buffer=6, rng=np.random.default_rng(0))
    sb.add(clips)
    with pytest.raises(ValueError):
        sb.take(np.empty((4, 1, 1, 2, 3), np.uint8)[:, :, :, ::-1])  # not C-contiguous
    out = np.full((4, 1, 1, 2, 3), 255, np.uint8)
    assert sb.ready() and sb.take(out) is out and sb.n == 2
    assert len(set(out[:, 0, 0, 0, 0].tolist())) == 4 and 255 not in out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_are_pinned_when_cuda_is_present(shards: str) -> None:
    b = next(arrow_clip_batches(shards, 4, seed=0))
    assert b.is_pinned() and b.dtype == torch.uint8
    assert not next(arrow_clip_batches(shards, 4, seed=0, pin_memory=False)).is_pinned()


def test_ray_executions_list_whole_seeded_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    import vidgan.ray_stream as rs

    files = [f"f{i}" for i in range(5)]
    monkeypatch.setattr(rs, "CLIPS_PER_EXECUTION", 100)
    assert rs.epochs_per_execution(30, 5) == 4 and rs.epochs_per_execution(1000, 5) == 1
    monkeypatch.setattr(rs, "MAX_FILES_PER_EXECUTION", 12)
    assert rs.epochs_per_execution(30, 5) == 2 and rs.epochs_per_execution(1, 20) == 1
    first = rs.execution_files(files, 30, 0, True, 7)
    assert len(first) == 10 and sorted(first[:5]) == sorted(first[5:]) == files  # whole epochs
    assert first[:5] != first[5:] or first[:5] != files  # each epoch its own shuffle
    assert rs.execution_files(files, 30, 0, True, 7) == first and rs.execution_files(files, 30, 1, True, 7) != first
    assert rs.execution_files(files, 30, 1, False, 7) == files * 2
