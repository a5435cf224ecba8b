"""What a person reads in the MLflow UI (#14), against a real SQLite MLflow store and without Ray: the trial
runs' metrics, images, inputs and descriptions (TrialLogger), and what the end of a sweep adds (finish_sweep on
real Tune Result objects and real trainer checkpoints): the ranking by best_fvd, the descriptions, the spec
artifact and the best generator as an MLflow model that loads and generates.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from empty_store import empty_store
from mlflow import MlflowClient

from tune_jobs import report, tracking
from tune_jobs.spec import parse_spec

VARIANTS = ["gp", "sn", "drift"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vidgan.ingest import ingest_sample

    root = tmp_path_factory.mktemp("ui-data")
    ingest_sample(root / "data", frames=16, size=32, stride=8)
    return root / "data"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite MLflow store for the module (a copy of an empty one: creating its tables takes seconds); each test
    its experiment."""
    root = tmp_path_factory.mktemp("ui-store")
    empty_store(root / "mlflow.db")
    return root


def _spec(data: Path, root: Path, experiment: str):
    return parse_spec({
        "name": "ui",
        "datasets": [{"name": "sample", "path": str(data)}],
        "model": {"frames": 16, "size": 32, "width": 4, "z_dim": 8},
        "train": {"batch_size": 4, "n_critic": 2},
        "variants": VARIANTS,
        "eval": {"every": 2, "n_real": 8, "n_fake": 4, "frames": 16, "batch_size": 4, "grid": 4},
        "scheduler": {"type": "asha", "max_t": 6, "grace_period": 2, "reduction_factor": 3},
        "resources": {"cpu": 1, "data_cpu": 0, "threads": 1},
        "mlflow": {"tracking_uri": f"sqlite:///{root}/mlflow.db", "experiment": experiment},
        "storage_path": str(root / "results"),
    })


def _context(spec) -> tracking.SweepContext:
    uri = tracking.resolve_tracking_uri(spec.mlflow.tracking_uri)
    exp = tracking.ensure_experiment(uri, spec.mlflow.experiment)
    parent = tracking.start_parent_run(uri, exp, "ui-sweep")
    return tracking.SweepContext(spec=spec, sweep="ui-sweep", tracking_uri=uri, experiment_id=exp, parent_run_id=parent)


def _result(step: int, fvd: float) -> dict[str, float]:
    """A trial's Tune result at an evaluation, with every key train_trial reports."""
    return {
        "critic_loss": 1.0 / step, "wasserstein": 0.5, "penalty": 0.0, "drift": 0.0, "grad_norm": 0.0,
        "generator_loss": -0.2, "iterations_per_s": 3.0, "clips_per_s": 24.0, "data_wait_fraction": 0.1,
        "fvd": fvd, "kvd": fvd / 100, "kvd_stderr": 0.01, "n_fake": 4, "n_real": 8, "iteration": step,
        "critic_updates": 2 * step, "generator_updates": step, "paper_steps": 3 * step, "gpu_memory_bytes": 0.0,
        "hp_lr": 2e-4, "eval_time_s": 0.5,
    }


def _samples(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (4, 16, 32, 32, 3), dtype=np.uint8)


def test_trial_run_metrics_images_inputs_and_restart(data: Path, store: Path, tmp_path: Path, monkeypatch) -> None:
    from PIL import Image

    from vidgan import shards

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    spec = _spec(data, store, "ui-trial")
    ctx = _context(spec)
    trial = spec.trial({"variant": "sn", "dataset": "sample", "seed": 0})  # no penalty, no drift
    logger = tracking.TrialLogger(ctx, trial, "t1")
    evaluations: list[dict[str, float]] = []
    for step, fvd in ((2, 30.0), (4, 10.0), (6, 20.0)):
        evaluations.append({"iteration": step, "fvd": fvd})
        logger.report(_result(step, fvd), evaluations, _samples(step), tmp_path)
    import time

    client = MlflowClient(ctx.tracking_uri)
    deadline = time.monotonic() + 600  # only a hang reaches it: the wait ends at the monitor's first sample in MLflow
    while not any(k.startswith("system/cpu") for k in client.get_run(logger.run_id).data.metrics):
        assert time.monotonic() < deadline, "the system metrics monitor logged nothing"
        time.sleep(0.1)
    logger.finish()

    run = client.get_run(logger.run_id)
    history = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)]
               for k in ("best_fvd", "best_fvd_iteration", "fvd", "loss/critic")}
    assert history["best_fvd"] == [(2, 30.0), (4, 10.0), (6, 10.0)]  # the best so far at every evaluation
    assert history["best_fvd_iteration"] == [(2, 2.0), (4, 4.0), (6, 4.0)]
    assert [s for s, _ in history["fvd"]] == [2, 4, 6] and len(history["loss/critic"]) == 3
    metrics, params = run.data.metrics, run.data.params
    # constants are parameters, not metrics; names grouped by prefix; the scheduler's names stay flat
    assert {"n_fake", "n_real", "iteration", "critic_loss", "loss/penalty", "loss/drift", "train/grad_norm",
            "throughput/gpu_memory_bytes", "hp_lr"}.isdisjoint(metrics), sorted(metrics)
    assert params["n_fake"] == "4" and params["n_real"] == "8" and params["loss/penalty"] == "0.0"
    assert {"fvd", "kvd", "eval/kvd_stderr", "loss/generator", "throughput/clips_per_s",
            "train/paper_steps"} <= set(metrics)
    assert any(k.startswith("system/cpu") for k in metrics), sorted(metrics)  # MLflow's system metrics
    # samples: a 4x strip per step (image key "samples"), and GIF/MP4 grids at 4x the native tile
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    pngs = sorted(p for p in images if p.endswith(".png") and "+compressed" not in p)
    assert [p.split("+step+")[1].split("+")[0] for p in pngs] == ["2", "4", "6"]
    png = Image.open(client.download_artifacts(run.info.run_id, pngs[0], str(tmp_path)))
    assert png.size == (4 * (4 * 33 - 1), 4 * (4 * 33 - 1))  # 4 frames x 4 clips of 32 px, 1 px gaps, 4x
    gif = client.download_artifacts(run.info.run_id, "samples/samples_0000006.gif", str(tmp_path))
    assert Image.open(gif).size == (4 * 65, 4 * 65)  # a 2x2 grid of 32 px clips, 4x
    assert "fvd_curve.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # the dataset as an input: digest from the manifest's sha256
    (inp,) = run.inputs.dataset_inputs
    sha = shards.describe(str(data)).manifest_sha256
    assert inp.dataset.name == "sample" and inp.dataset.digest == sha[:36] and str(data) in inp.dataset.source
    assert {t.key: t.value for t in inp.tags}["vidgan.manifest_sha256"] == sha
    assert run.data.tags[tracking.TAG_NOTE].startswith("**sn** on `sample`, seed 0: running at iteration 6")

    # a restarted trial continues its run and its best: a worse FVD keeps best_fvd at 10 from iteration 4
    again = tracking.TrialLogger(ctx, trial, "t1")
    assert again.run_id == logger.run_id
    again.report(_result(8, 15.0), [*evaluations, {"iteration": 8, "fvd": 15.0}], None, tmp_path)
    again.finish()
    metrics = client.get_run(logger.run_id).data.metrics
    assert (metrics["best_fvd"], metrics["best_fvd_iteration"]) == (10.0, 4.0)
    assert len(client.get_run(logger.run_id).inputs.dataset_inputs) == 1


def test_run_links_open_the_training_view() -> None:
    url = tracking.run_url("http://u:secret@mlflow.example:5000/", "3", "abc")
    assert url == "http://mlflow.example:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    (line,) = tracking.open_lines("sqlite:////tmp/x/mlflow.db", "1", "r")
    assert "`vidgan ui --tracking-uri sqlite:////tmp/x/mlflow.db`" in line and "mlflow ui" not in line
    assert line.endswith("http://127.0.0.1:5000/#/experiments/1/runs/r?workflowType=machine_learning")
    # the store `vidgan ui` finds by itself (./mlflow.db, as the demo's) needs no flag
    (line,) = tracking.open_lines(tracking.resolve_tracking_uri(None), "1", "r")
    assert "`vidgan ui` serves it and opens http://127.0.0.1:5000/#/experiments/1/runs/r" in line


def test_finished_sweep_ranks_describes_and_logs_the_best_generator(
    data: Path, store: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    import mlflow.pytorch
    import pandas as pd
    import torch
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    from ray.tune import Checkpoint, Result

    from tune_jobs.sweep import finish_sweep, log_sweep_start
    from tune_jobs.trainable import save_checkpoint
    from vidgan.trainer import Trainer

    spec = _spec(data, store, "ui-sweep")
    ctx = _context(spec)
    parent = tracking.Tracker(ctx.tracking_uri, ctx.parent_run_id)
    log_sweep_start(parent, spec, ctx.sweep)
    # per variant: FVD at iterations 2, 4, 6 (drift is stopped after its first evaluation)
    curves = {"gp": [40.0, 25.0, 30.0], "sn": [35.0, 12.0, 18.0], "drift": [50.0]}
    results = []
    for i, variant in enumerate(VARIANTS):
        config = {"variant": variant, "dataset": "sample", "seed": 0}
        trial = spec.trial(config)
        logger = tracking.TrialLogger(ctx, trial, f"t{i}")
        reports = [_result(2 * (j + 1), f) for j, f in enumerate(curves[variant])]
        for j, r in enumerate(reports):
            logger.report(r, reports[: j + 1], _samples(i), tmp_path)
        logger.finish()
        trainer = Trainer(spec.model, trial.variant, trial.train_config)
        folder = save_checkpoint(trainer, [], tmp_path / f"ckpt{i}")
        results.append(Result(
            metrics={**reports[-1], "trial_id": f"t{i}", "config": config}, checkpoint=None, error=None,
            path=str(tmp_path / f"train_trial_t{i}"), metrics_dataframe=pd.DataFrame(reports),
            best_checkpoints=[(Checkpoint.from_directory(str(folder)), {"fvd": min(curves[variant])})],
        ))

    outcome = finish_sweep(spec, ctx, str(tmp_path / "results" / "ui"), results)
    # `vidgan report` rebuilds the table the sweep printed from MLflow alone (by the parent run's id)
    from tune_jobs.main import main

    capsys.readouterr()
    assert main(["report", ctx.parent_run_id, "--tracking-uri", ctx.tracking_uri]) == 0
    assert outcome.table in capsys.readouterr().out

    client = MlflowClient(ctx.tracking_uri)
    # sorting the trial runs by best_fvd ranks them as the comparison table does
    nested = client.search_runs([ctx.experiment_id], f"tags.`mlflow.parentRunId` = '{ctx.parent_run_id}'",
                                order_by=["metrics.best_fvd ASC"])
    table_order = [r.variant for r in report.sort_rows(outcome.rows) if not math.isnan(r.best_fvd)]
    assert [r.data.tags[tracking.TAG_VARIANT] for r in nested] == table_order == ["sn", "gp", "drift"]
    assert [r.data.metrics["best_fvd"] for r in nested] == [12.0, 25.0, 50.0]
    assert nested[0].data.metrics["best_fvd_iteration"] == 4.0
    ends = {r.data.tags[tracking.TAG_VARIANT]: r.data.tags[tracking.TAG_NOTE] for r in nested}
    assert ends["sn"].startswith("**sn** on `sample`, seed 0: completed at iteration 6; best FVD 12.000 at iteration 4")
    assert "stopped by ASHA at iteration 2" in ends["drift"]

    run = client.get_run(ctx.parent_run_id)
    note = run.data.tags[tracking.TAG_NOTE]
    assert "Winner" in note and "sn" in note.split("Winner", 1)[1].split("\n")[0]
    assert f"#/experiments/{ctx.experiment_id}/runs/{ctx.parent_run_id}/artifacts/comparison.md" in note
    # a link to a shared view of the trials (sorted by best_fvd, samples side by side) the UI reads from the experiment
    view = f"#/experiments/{ctx.experiment_id}/runs?viewStateShareKey=vidgan-ui-sweep&compareRunsMode=CHART"
    assert view in note
    state = json.loads(client.get_experiment(ctx.experiment_id).tags["mlflow.sharedViewState.vidgan-ui-sweep"])
    assert state["orderByKey"] == "metrics.`best_fvd`" and ctx.parent_run_id in state["searchFilter"]
    (image,) = [c for c in state["compareRunCharts"] if c["type"] == "IMAGE"]
    assert image["imageKeys"] == ["samples"] and image["showRunParams"] is False
    # the parent: flat params, the spec as YAML, the dataset as an input, real clips as image "samples" at step 0
    params = run.data.params
    assert params["variants"] == "gp, sn, drift" and params["max_t"] == "6" and params["model.frames"] == "16"
    assert params["n_real"] == "8" and params["n_fake"] == "4" and not any(k.startswith("spec.") for k in params)
    spec_yaml = Path(client.download_artifacts(ctx.parent_run_id, "spec.yaml", str(tmp_path))).read_text()
    assert parse_spec(yaml.safe_load(spec_yaml)) == spec
    assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["sample"]
    assert any("samples+step+0+" in a.path for a in client.list_artifacts(ctx.parent_run_id, "images"))
    assert "sweep/best_fvd" in run.data.metrics and "best_fvd" not in run.data.metrics
    trials_csv = Path(client.download_artifacts(ctx.parent_run_id, "trials.csv", str(tmp_path))).read_text()
    assert trials_csv.startswith("variant,best_fvd,")

    # the best trial's generator, logged with mlflow.pytorch, loads and generates clips of the model's shape
    model_uri = run.data.tags[tracking.TAG_BEST_MODEL]
    assert model_uri in note
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # a torch.export program: nothing unpickled
    with _use_tracking_uri(ctx.tracking_uri):
        generator = mlflow.pytorch.load_model(model_uri)
    with torch.inference_mode():
        for n in (1, 3):  # any batch size, not only the example's 2
            clips = generator(torch.randn(n, spec.model.z_dim))
            assert clips.shape == (n, 3, 16, 32, 32) and float(clips.abs().max()) <= 1.0
    logged = client.get_logged_model(model_uri.split("/")[-1])
    assert logged.source_run_id == nested[0].info.run_id
    assert logged.experiment_id == ctx.experiment_id  # in the sweep's Models tab, not under MLflow's Default


def test_samples_at_a_glance_scores_first_best_fvd_on_the_model(data: Path, store: Path, tmp_path: Path) -> None:
    """#31 item 3: the parent gets one grid per evaluation step (a row per trial, best first, under the real clips),
    again at step 0 where MLflow's image cards open and as samples_grid.png linked from its description; a trial's
    description shows its latest samples; the scores have a section of their own (``distances/``) beside their flat
    names; the best FVD is on the logged model's page."""
    from PIL import Image

    from tune_jobs import history, sample_grid
    from tune_jobs.sweep import log_sweep_start

    spec = _spec(data, store, "ui-glance")
    ctx = _context(spec)
    parent = tracking.Tracker(ctx.tracking_uri, ctx.parent_run_id)
    log_sweep_start(parent, spec, ctx.sweep)
    curves = {"gp": [40.0, 25.0, 30.0], "sn": [35.0, 12.0, 18.0], "drift": [50.0]}  # drift stopped at iteration 2
    for i, variant in enumerate(VARIANTS):
        logger = tracking.TrialLogger(ctx, spec.trial({"variant": variant, "dataset": "sample", "seed": 0}), f"t{i}")
        reports = [_result(2 * (j + 1), f) for j, f in enumerate(curves[variant])]
        for j, r in enumerate(reports):
            logger.report(r, reports[: j + 1], _samples(10 * i + j), tmp_path)
        logger.finish()
    client = MlflowClient(ctx.tracking_uri)
    record = history.read_sweep(ctx.tracking_uri, ctx.parent_run_id, tmp_path / "read")
    runs = history.trial_run_ids(ctx.tracking_uri, record)

    # a trial: its description leads with its latest samples (a small plain artifact), and its scores come first
    sn = client.get_run(runs["t1"])
    note = sn.data.tags[tracking.TAG_NOTE]
    assert note.startswith("**sn** on `sample`, seed 0: running at iteration 6")
    picture = f"\n\n![latest samples](get-artifact?path=samples%2Flatest.png&run_uuid={runs['t1']}&v=6-"
    assert picture in note and note.index(picture) == note.index("\n\n")  # below the first line
    latest = Image.open(client.download_artifacts(runs["t1"], tracking.GLANCE_PATH, str(tmp_path / "sn")))
    assert latest.height <= tracking.GLANCE_HEIGHT and latest.width > latest.height
    assert np.array_equal(np.asarray(latest), tracking.glance(_samples(12)))  # the last evaluation's
    metrics = sn.data.metrics
    assert metrics["distances/fvd"] == metrics["fvd"] == 18.0
    assert metrics["distances/best_fvd"] == metrics["best_fvd"] == 12.0 and metrics["distances/kvd"] == metrics["kvd"]
    sections = {k.split("/")[0] for k in metrics if "/" in k} - {"system"}  # MLflow shows system/ in its own tab
    assert min(sections, key=str.lower) == "distances"  # the first section in the MLflow UI's order (case aside)
    # the end of the sweep describes it again: still with the picture
    tracking.Tracker(ctx.tracking_uri, runs["t1"]).describe("**sn**: completed\n\nrestarted once")
    described = client.get_run(runs["t1"]).data.tags[tracking.TAG_NOTE].split("\n\n")
    assert described[0] == "**sn**: completed" and described[1].startswith("![latest samples](get-artifact?")
    assert described[2] == "restarted once"

    # the parent: a grid per evaluation step, best first
    text = sample_grid.with_grid(ctx, record.rows, "[table](x) | [compare](y)\n\nWinner: sn")
    grid_link = tracking.artifact_url(ctx.experiment_id, ctx.parent_run_id, "samples_grid.png")
    assert text == f"[table](x) | [compare](y) | [Every trial's samples, best first]({grid_link})\n\nWinner: sn"
    assert grid_link.endswith("samples_grid.png?workflowType=machine_learning")
    grids = history.sample_images(client, ctx.parent_run_id, sample_grid.GRID_KEY)
    assert sorted(grids) == [0, 2, 4, 6]
    order = {step: [r.variant for r, *_ in sample_grid.grid_rows(record.rows, {
        t: history.sample_images(client, runs[t]) for t in runs}, step)] for step in (2, 4, 6)}
    assert order == {2: ["sn", "gp", "drift"], 4: ["sn", "gp", "drift"], 6: ["sn", "gp", "drift"]}
    last = np.asarray(Image.open(client.download_artifacts(ctx.parent_run_id, grids[6], str(tmp_path / "g6"))))
    at_zero = np.asarray(Image.open(client.download_artifacts(ctx.parent_run_id, grids[0], str(tmp_path / "g0"))))
    artifact = np.asarray(Image.open(client.download_artifacts(ctx.parent_run_id, "samples_grid.png", str(tmp_path))))
    assert np.array_equal(last, at_zero) and np.array_equal(last, artifact)  # step 0 and the file: the latest
    rows = 1 + 3  # the real clips, then a row per trial
    assert last.shape[0] == sample_grid.TITLE_HEIGHT + rows * (sample_grid.ROW_HEIGHT + sample_grid.GAP)
    # each trial's strip in its row, in ranking order (sn's of iteration 6, gp's, drift's of iteration 2)
    for row, (trial, seed) in enumerate((("t1", 12), ("t0", 2), ("t2", 20)), 1):
        top = sample_grid.TITLE_HEIGHT + row * (sample_grid.ROW_HEIGHT + sample_grid.GAP)
        strip = Image.fromarray(np.asarray(Image.open(client.download_artifacts(
            runs[trial], history.sample_images(client, runs[trial])[max(history.sample_images(client, runs[trial]))],
            str(tmp_path / trial)))))
        width = round(strip.width * sample_grid.ROW_HEIGHT / strip.height)
        expected = np.asarray(strip.resize((width, sample_grid.ROW_HEIGHT), Image.Resampling.BOX))
        cell = last[top : top + sample_grid.ROW_HEIGHT, sample_grid.LABEL_WIDTH : sample_grid.LABEL_WIDTH + width]
        assert np.array_equal(cell, expected), (trial, seed)

    # the best FVD on the logged model's page: a model of sn's run gets its best_fvd as a model parameter
    model = client.create_logged_model(ctx.experiment_id, name="generator", source_run_id=runs["t1"])
    client.log_model_params(model.model_id, {"variant": "sn"})  # as log_model copies the run's parameters
    before = {k: client.get_metric_history(runs["t1"], k) for k in ("best_fvd", "kvd")}
    tracking.model_scores(ctx.tracking_uri, f"models:/{model.model_id}", ctx.sweep)
    logged = client.get_logged_model(model.model_id)
    assert logged.params["best_fvd"] == "12" and logged.params["best_fvd_iteration"] == "4"
    assert logged.params["variant"] == "sn" and logged.params["sweep"] == ctx.sweep
    # the run's own history is unchanged: a metric logged for a model lands in its source run's history too
    assert {k: client.get_metric_history(runs["t1"], k) for k in ("best_fvd", "kvd")} == before
