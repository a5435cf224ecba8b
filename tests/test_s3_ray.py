"""The cloud path with a real 2-CPU Ray and the local S3 server (tests/s3_server.py): a one-shard dataset streamed by
Ray Data inside a trial that holds every CPU, and a sweep whose data, Tune storage and MLflow artifacts all live in
the bucket, as on `ray up cluster.yaml`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow_server import Server
from s3_server import list_keys, make_bucket

from vidgan import shards
from vidgan.ingest import IngestConfig, ingest
from vidgan.ingest.config import SyntheticSpec

pytestmark = pytest.mark.slow
#: a deadline only a real hang reaches (the one-shard stream hung forever at cb3a639; it takes seconds now)
HANG_S = 600


@pytest.fixture(scope="module")
def s3_ray(s3_server, tmp_path_factory):
    """A local 2-CPU Ray whose workers inherit the S3 server's environment."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    os.environ["VIDGAN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    os.environ.pop("VIDGAN_CACHE", None)


def test_ray_keeps_small_path_lists_in_the_reading_process():
    """Our one-shard cap (vidgan.ray_stream.RAY_SERIAL_METADATA_PATHS) is below the path count at which Ray Data
    sends the file-size look-ups to tasks outside the placement group; a Ray upgrade that lowers it fails here."""
    from ray.data.datasource import file_based_datasource

    from vidgan import ray_stream

    assert ray_stream.RAY_SERIAL_METADATA_PATHS <= file_based_datasource.FILE_SIZE_FETCH_PARALLELIZATION_THRESHOLD
    assert ray_stream.epochs_per_execution(8, 1) < ray_stream.RAY_SERIAL_METADATA_PATHS


def test_a_one_shard_s3_dataset_streams_inside_a_placement_group_that_holds_every_cpu(s3_ray):
    """What a trial with ``resources.data_cpu: 1`` does: its trainable in bundle 0, Ray Data in bundle 1, and no CPU
    of the cluster free outside them. At cb3a639 the first batch never came (Ray Data's file-size look-ups of the
    shard named 256 times ran as tasks outside the group)."""
    ray = s3_ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    data = f"{make_bucket('vidgan-ray-one-shard')}/sq"
    ingest([], data, IngestConfig(frames=16, size=32, synthetic=SyntheticSpec(kind="squares", clips=8, seed=0),
                                  parallel="local"))
    assert len(shards.verified(data).files) == 1

    @ray.remote(num_cpus=1)
    class Trial:
        def batches(self, uri: str, n: int) -> list[tuple[int, ...]]:
            from vidgan.ray_stream import ray_clip_batches

            it = ray_clip_batches(uri, 4, seed=0)
            shapes = [tuple(next(it).shape) for _ in range(n)]
            it.close()
            return shapes

    pg = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    ray.get(pg.ready(), timeout=HANG_S)
    try:
        trial = Trial.options(scheduling_strategy=PlacementGroupSchedulingStrategy(
            pg, placement_group_bundle_index=0, placement_group_capture_child_tasks=True)).remote()
        shapes = ray.get(trial.batches.remote(data, 6), timeout=HANG_S)  # 24 clips: three epochs of 8
        assert shapes == [(4, 3, 16, 32, 32)] * 6
        ray.kill(trial)
    finally:
        remove_placement_group(pg)


def test_a_sweep_keeps_data_tune_state_and_mlflow_artifacts_in_the_bucket(s3_ray, s3_server, tmp_path, monkeypatch):
    """Data made from a spec's ``synthetic:`` into the bucket, ``storage_path`` in pyarrow's query form (the sweep's
    name used to land inside the query), Ray Data streaming it in the trial, MLflow artifacts proxied to the bucket
    by the server; then ``--resume`` of the finished sweep reads its state back from the bucket."""
    from tune_jobs.spec import parse_spec
    from tune_jobs.sweep import run_sweep

    monkeypatch.chdir(tmp_path)
    bucket = make_bucket("vidgan-ray-sweep")
    host = s3_server.removeprefix("http://")
    server = Server(tmp_path, artifacts=f"{bucket}/mlartifacts")
    server.start()
    try:
        raw = {
            "name": "cloud",
            "datasets": [{"name": "sq", "path": f"{bucket}/data/sq",
                          "synthetic": {"kind": "squares", "clips": 16, "seed": 0}}],
            "model": {"frames": 16, "size": 32, "width": 4, "z_dim": 8},
            "train": {"batch_size": 4, "n_critic": 1},
            "variants": ["gp"],
            "eval": {"every": 2, "n_real": 8, "n_fake": 4, "frames": 9, "batch_size": 4, "grid": 2,
                     "generator": "raw"},
            "scheduler": {"type": "fifo", "max_t": 2, "grace_period": 2},
            "resources": {"cpu": 1, "data_cpu": 1, "threads": 1},
            "mlflow": {"tracking_uri": server.uri, "experiment": "cloud"},
            "storage_path": f"{bucket}/results?endpoint_override={host}&scheme=http",
        }
        outcome = run_sweep(parse_spec(raw, base_dir=tmp_path), name="cloud-1", verbose=0)
        assert [r.status for r in outcome.rows] == ["completed"]
        keys = list_keys(bucket)
        assert "data/sq/manifest.json" in keys
        assert any(k.startswith("results/cloud-1/") and "checkpoint_" in k for k in keys), keys
        assert any(k.startswith("mlartifacts/") and k.endswith("spec.yaml") for k in keys), keys
        assert not any("?" in k or "scheme=http" in k for k in keys), keys
        assert not (tmp_path / "s3:").exists() and not (tmp_path / "results").exists()
        client = MlflowClient(server.uri)
        assert client.get_run(outcome.parent_run_id).info.status == "FINISHED"

        again = run_sweep(parse_spec(raw, base_dir=tmp_path), resume=True, verbose=0)
        assert again.parent_run_id == outcome.parent_run_id and [r.status for r in again.rows] == ["completed"]
        for key in ("sweep/trials", "sweep/iterations_saved_fraction"):  # logged once, not again by the resume
            assert len(client.get_metric_history(outcome.parent_run_id, key)) == 1, key
    finally:
        server.stop()


def test_check_refuses_a_missing_bucket_before_any_mlflow_run(s3_ray, tmp_path, capsys):
    from tune_jobs.main import main

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: nobucket\n"
        f"datasets: [{{name: sq, path: {tmp_path}/sq, synthetic: {{kind: squares, clips: 16}}}}]\n"
        "model: {frames: 16, size: 32, width: 4}\ntrain: {batch_size: 4}\nvariants: [gp]\n"
        "eval: {every: 2, n_real: 8, n_fake: 4, frames: 9, batch_size: 4}\n"
        "scheduler: {type: fifo, max_t: 2, grace_period: 2}\n"
        f"mlflow: {{tracking_uri: 'sqlite:///{tmp_path}/mlflow.db', experiment: e}}\n"
        "storage_path: s3://no-such-bucket-vg/results\n"
    )
    for argv in (["sweep", str(spec), "--check"], ["sweep", str(spec)]):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "bucket 'no-such-bucket-vg' does not exist" in err and err.count("\n") == 1, err
    assert not (tmp_path / "mlflow.db").exists() or not MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()])
    assert not Path(tmp_path / "sq").exists()
