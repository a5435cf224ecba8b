"""End-to-end sweeps on a real local Ray (2 CPUs, shared by this module), real MLflow (SQLite), real data.

Tiny settings: a 16-frame 32x32 iVGAN of width 4, FVD on 4 generated vs 8 real clips (statistically
meaningless at this N, but the whole path runs: Ray Data stream, I3D, ASHA, Optuna, MLflow).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from cluster import procs
from tune_jobs import tracking
from tune_jobs.spec import parse_spec
from tune_jobs.sweep import SWEEP_STATE_FILE as STATE_FILE
from tune_jobs.sweep import run_sweep

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: a deadline only a real hang reaches: every wait below ends at its event (a log line, an MLflow step, an exit)
HANG_S = 900


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, ray_cluster):
    """A folder with the sample dataset (16 frames of 32x32) and an MLflow store."""
    from vidgan.ingest import ingest_sample

    root = tmp_path_factory.mktemp("sweeps")
    ingest_sample(root / "data", frames=16, size=32, stride=8)
    return root


#: one I3D pass of 4 clips x 9 frames per evaluation (the raw generator only, no samples; with LEAN_TRAIN no moving
#: average to score beside it): for the tests that are about resuming, searching or exploiting, not about what an
#: evaluation logs (the ASHA test checks that)
LEAN_EVAL = {"every": 2, "n_real": 8, "n_fake": 4, "frames": 9, "batch_size": 4, "grid": 0, "generator": "raw"}
LEAN_TRAIN = {"batch_size": 4, "n_critic": 2, "ema": False}


def _spec(root: Path, **changes) -> dict:
    spec = {
        "name": "t",
        "datasets": [{"name": "sample", "path": str(root / "data")}],
        "model": {"frames": 16, "size": 32, "width": 4, "z_dim": 8},
        "train": {"batch_size": 4, "n_critic": 2},
        "variants": ["gp"],
        # I3D on the first 9 frames (its minimum): an evaluation scores two generators (EMA and raw)
        "eval": {"every": 2, "n_real": 8, "n_fake": 4, "frames": 9, "batch_size": 4, "grid": 4},
        "scheduler": {"type": "asha", "max_t": 6, "grace_period": 2, "reduction_factor": 3},
        # the in-process pyarrow reader: two trials at a time, no Ray Data start-up per trial
        "resources": {"cpu": 1, "data_cpu": 0, "threads": 1},
        "max_failures": 1,
        "mlflow": {"tracking_uri": f"sqlite:///{root}/mlflow.db", "experiment": "e2e"},
        "storage_path": str(root / "results"),
    }
    spec.update(changes)
    return spec


def _client(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root}/mlflow.db")


def _nested(root: Path, parent: str) -> list:
    client = _client(root)
    exp = client.get_experiment_by_name("e2e")
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")


def _report(root: Path, capsys: pytest.CaptureFixture, *argv: str) -> str:
    """What `vidgan report ARGV` prints for this module's store (exit status 0)."""
    from tune_jobs.main import main

    capsys.readouterr()
    assert main(["report", *argv, "--tracking-uri", f"sqlite:///{root}/mlflow.db"]) == 0
    return capsys.readouterr().out


def test_asha_sweep_stops_weak_trials_survives_divergence_and_logs_to_mlflow(workdir: Path, capsys) -> None:
    # Four trials, one at a time (max_concurrent_trials 1): each reaches ASHA's rung (iteration 2) in the order the
    # sweep lists them, and with seeded single-thread training on the CPU each reaches it with the same FVD in every
    # run, so which trial ASHA stops there is the same in every run, not a matter of which trial got the CPU first
    # (with two at a time, an order where each arriving trial beats the ones before stops none). drift's penalty
    # weight overflows fp32: that trial diverges, the sweep goes on.
    spec = parse_spec(
        _spec(
            workdir,
            name="asha",
            variants=["gp", "sn", "one_sided", "drift"],
            overrides={"drift": {"penalty_weight": 1e39}},
            scheduler={"type": "asha", "max_t": 4, "grace_period": 2, "reduction_factor": 3},
            max_concurrent_trials=1,
        )
    )
    outcome = run_sweep(spec, name="asha", verbose=0)
    status = {r.variant: r.status for r in outcome.rows}
    print({r.variant: (r.status, r.best_fvd) for r in outcome.rows})
    assert len(outcome.rows) == 4
    assert status["drift"] == "diverged"
    assert status["gp"] == "completed"  # the first at the rung always goes on
    assert "stopped_by_asha" in status.values()
    assert outcome.iterations_saved > 0
    for r in outcome.rows:
        if r.status != "diverged":
            assert r.iterations in (2, 4) and r.best_fvd == r.best_fvd  # a real number
            assert r.paper_steps == r.iterations * 3  # 2 critic + 1 generator update per iteration

    client = _client(workdir)
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "comparison.md", "comparison.csv", "fvd_vs_iterations.png"
    }
    nested = _nested(workdir, outcome.parent_run_id)
    assert len(nested) == 4  # one run per trial, no duplicates
    by_variant = {r.data.tags[tracking.TAG_VARIANT]: r for r in nested}
    assert by_variant["drift"].info.status == "FAILED"
    assert "diverged" in by_variant["drift"].data.tags[tracking.TAG_REASON]
    done = next(r for r in nested if r.data.tags[tracking.TAG_END] == "completed")
    assert done.data.params["loss.penalty"] in {"gp", "none", "zero_centered", "one_sided", "r1"}
    assert done.data.tags[tracking.TAG_DATASET] == "sample"
    history = client.get_metric_history(done.info.run_id, "fvd")
    assert sorted(m.step for m in history) == [2, 4]
    for key in ("fvd_raw", "fvd_ema", "fvd_ci_low", "fvd_ci_high", "fvd_smooth"):  # at every evaluation
        assert sorted(m.step for m in client.get_metric_history(done.info.run_id, key)) == [2, 4], key
    artifacts = {a.path for a in client.list_artifacts(done.info.run_id)}
    assert {"samples", "fvd_curve.png", "best_checkpoint"} <= artifacts
    samples = {a.path for a in client.list_artifacts(done.info.run_id, "samples")}
    assert "samples/samples_0000004.gif" in samples and "samples/samples_0000004.mp4" in samples

    # What the MLflow UI shows (#14; tests/test_mlflow_ui.py checks each piece without Ray): the trial runs sorted
    # by their metric best_fvd rank as the comparison table does, and the parent's description names the winner
    import math

    from tune_jobs.report import sort_rows

    ranked = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                order_by=["metrics.best_fvd ASC"])
    table = [(r.variant, r.best_fvd) for r in sort_rows(outcome.rows) if not math.isnan(r.best_fvd)]
    assert [(r.data.tags[tracking.TAG_VARIANT], r.data.metrics["best_fvd"]) for r in ranked[: len(table)]] == table
    assert f"Winner: {table[0][0]}**" in parent.data.tags[tracking.TAG_NOTE] or \
        f"Best trial: {table[0][0]}**" in parent.data.tags[tracking.TAG_NOTE]
    assert tracking.TAG_BEST_MODEL in parent.data.tags and "spec.yaml" in {a.path for a in client.list_artifacts(
        parent.info.run_id)}
    images = [a.path for a in client.list_artifacts(done.info.run_id, "images")]
    assert {p.split("+step+")[1].split("+")[0] for p in images} == {"2", "4"}  # samples by step
    assert [i.dataset.name for i in done.inputs.dataset_inputs] == ["sample"]
    assert "n_fake" not in done.data.metrics and done.data.params["n_fake"] == "4"
    assert "loss/critic" in done.data.metrics and "critic_loss" not in done.data.metrics
    assert done.data.tags[tracking.TAG_NOTE].startswith(f"**{done.data.tags[tracking.TAG_VARIANT]}** on `sample`")
    # the table the sweep printed, rebuilt from MLflow alone (stopped, diverged and completed trials alike)
    assert outcome.table in _report(workdir, capsys, "asha")


def test_optuna_search_samples_conditional_parameters(workdir: Path) -> None:
    spec = parse_spec(
        _spec(
            workdir,
            name="search",
            variants=["gp", "sn", "drift"],
            # one evaluation per trial: what the search samples and records is the question, not the training
            scheduler={"type": "asha", "max_t": 2, "grace_period": 2},
            search={
                "num_samples": 3,
                "seed": 1,
                "points_to_evaluate": [{"lr": 3e-4}],  # one round: tried first on each variant
                "space": {
                    "lr": {"low": 1e-5, "high": 1e-3, "log": True},
                    "penalty_weight": {"low": 1.0, "high": 20.0},
                    "drift_weight": {"low": 1e-5, "high": 1e-3, "log": True},
                },
            },
            max_concurrent_trials=2,
            eval=LEAN_EVAL,
            train=LEAN_TRAIN,
        )
    )
    outcome = run_sweep(spec, name="search", verbose=0)
    assert sorted(r.variant for r in outcome.rows) == ["drift", "gp", "sn"]
    params = {r.variant: r.params for r in outcome.rows}
    assert "drift_weight" in params["drift"] and "penalty_weight" in params["drift"]
    assert "penalty_weight" in params["gp"] and "drift_weight" not in params["gp"]
    assert "penalty_weight" not in params["sn"] and "lr=" in params["sn"]
    nested = {r.data.tags[tracking.TAG_VARIANT]: r for r in _nested(workdir, outcome.parent_run_id)}
    # the searched values reached the trial's configs
    lr = float(params["sn"].split("lr=")[1].split(",")[0])
    assert float(nested["sn"].data.params["train.lr"]) == pytest.approx(lr, rel=1e-2)
    assert float(nested["drift"].data.params["loss.drift_weight"]) != 1e-4
    assert {float(r.data.params["train.lr"]) for r in nested.values()} == {3e-4}  # points_to_evaluate went first

    # The study persists beside mlflow.db under the sweep's name, with every trial's FVD (optuna-dashboard reads
    # it), and a search on the same study warm-starts: it knows the 3 trials and goes on with the next variant.
    import optuna

    from tune_jobs import explore
    from tune_jobs.sweep import _tune_setup

    storage = f"sqlite:///{workdir}/optuna.db"
    study = optuna.load_study(study_name="search", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 3 and all(t.value == t.value for t in done)
    key = spec.eval.scheduler_metric  # what the searcher records: each trial's last reported score
    last = [max(_client(workdir).get_metric_history(r.info.run_id, key), key=lambda m: (m.step, m.timestamp))
            for r in nested.values()]
    assert sorted(t.value for t in done) == pytest.approx(sorted(m.value for m in last), rel=1e-6)
    assert explore.optuna_storage(spec, f"sqlite:///{workdir}/mlflow.db") == storage
    again = spec.model_copy(update={"search": spec.search.model_copy(update={"points_to_evaluate": []})})
    _, searcher, _ = _tune_setup(again, name="search", tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    assert searcher.suggest("next")["variant"] == "gp"
    trials = optuna.load_study(study_name="search", storage=storage).trials
    assert len(trials) == 4 and trials[-1].number == 3


def _start_sweep(root: Path, spec: dict, name: str, overrides: tuple[str, ...] = ()) -> subprocess.Popen:
    """`vidgan sweep SPEC [OVERRIDES]` in a process of its own on this module's Ray cluster."""
    import ray

    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1", "PYTHONUNBUFFERED": "1"}
    address = ray.get_runtime_context().gcs_address
    return subprocess.Popen(
        [sys.executable, "-m", "tune_jobs.main", "sweep", str(path), *overrides, "--name", name, "--address", address],
        cwd=root, env=env, stdout=open(root / f"{name}.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_for_fvd_steps(root: Path, name: str, steps: int, proc: subprocess.Popen, timeout: float = HANG_S) -> str:
    """Wait until some trial of sweep ``name`` has logged ``steps`` FVD values; return its run id."""
    state = root / "results" / name / STATE_FILE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, (root / f"{name}.log").read_text()[-3000:]
        if state.exists():
            parent = yaml.safe_load(state.read_text())["parent_run_id"]
            for run in _nested(root, parent):
                if len(_client(root).get_metric_history(run.info.run_id, "fvd")) >= steps:
                    return run.info.run_id
        time.sleep(1)
    raise AssertionError(f"no trial of {name} reached {steps} evaluations in {timeout} s")


def _wait_for_log(root: Path, name: str, text: str, proc: subprocess.Popen, timeout: float = HANG_S) -> str:
    """Wait until the log of sweep ``name`` (its driver's stderr) holds ``text``; return that line."""
    log = root / f"{name}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text().splitlines() if text in line]
        if lines:
            return lines[0]
        assert proc.poll() is None, f"the driver ended before its log said {text!r}: " + log.read_text()[-3000:]
        time.sleep(1)
    raise AssertionError(f"the log of {name} did not say {text!r} in {timeout} s: " + log.read_text()[-3000:])


def _trial_pids(root: int) -> list[int]:
    """Trial worker processes descending from ``root``: this module's Ray cluster was started by this test
    process, whose raylet starts the workers, so Ray clusters of other processes on the machine do not count."""
    return [pid for pid in procs.descendants({root}) if procs.cmdline_starts(pid, b"ray::ImplicitFunc")]


def test_killed_trial_resumes_from_checkpoint_into_the_same_mlflow_run(workdir: Path) -> None:
    # the in-process reader: Ray Data in a trial's placement group is test_data_ray's and test_s3_ray's question, and a
    # restored trial opens its stream with the same call (trainable.open_stream) whichever reader the spec names; here
    # Ray Data would start twice for a question about checkpoints
    spec = _spec(workdir, name="kill", scheduler={"type": "fifo", "max_t": 6, "grace_period": 2}, eval=LEAN_EVAL,
                 train=LEAN_TRAIN)
    proc = _start_sweep(workdir, spec, "kill", overrides=("train.lr=3e-4", "max_failures=2"))
    run_id = _wait_for_fvd_steps(workdir, "kill", 1, proc)
    pids = _trial_pids(os.getpid())
    assert len(pids) == 1
    os.kill(pids[0], signal.SIGKILL)
    # the restore: the trial's first result after its restart (the driver logs it), then the sweep's end
    resumed = _wait_for_log(workdir, "kill", "resumed from iteration", proc)
    assert int(resumed.split("resumed from iteration ")[1].split()[0]) in (2, 4), resumed  # from a checkpoint
    assert proc.wait(timeout=HANG_S) == 0, (workdir / "kill.log").read_text()[-3000:]

    state = yaml.safe_load((workdir / "results" / "kill" / STATE_FILE).read_text())
    nested = _nested(workdir, state["parent_run_id"])
    assert [r.info.run_id for r in nested] == [run_id]  # the restarted trial continued the same run
    steps = {m.step for m in _client(workdir).get_metric_history(run_id, "fvd")}
    assert steps == {2, 4, 6}  # nothing lost
    run = _client(workdir).get_run(run_id)
    assert run.data.tags[tracking.TAG_END] == "completed" and run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.0003"  # the override reached the trial
    # the parent run's spec.yaml is the spec with the overrides (`vidgan sweep spec.yaml` reruns it), and the
    # overrides as typed are its tag
    parent = _client(workdir).get_run(state["parent_run_id"])
    assert parent.data.tags["vidgan.overrides"] == "train.lr=3e-4 max_failures=2"
    (workdir / "kill-dl").mkdir()
    logged = yaml.safe_load(Path(_client(workdir).download_artifacts(parent.info.run_id, "spec.yaml",
                                                                     str(workdir / "kill-dl"))).read_text())
    assert logged["train"] == {**LEAN_TRAIN, "lr": 3e-4} and logged["max_failures"] == 2


def test_interrupted_driver_resumes_the_sweep(workdir: Path, capsys, caplog) -> None:
    # killed after a trial's first evaluation (of two per trial): the resume has the rest of both trials to run
    fifo = {"type": "fifo", "max_t": 4, "grace_period": 2}
    spec = _spec(workdir, name="resume", variants=["gp", "sn"], scheduler=fifo, eval=LEAN_EVAL, train=LEAN_TRAIN)
    proc = _start_sweep(workdir, spec, "resume")
    _wait_for_fvd_steps(workdir, "resume", 1, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies without any chance to clean up
    proc.wait()
    parent = yaml.safe_load((workdir / "results" / "resume" / STATE_FILE).read_text())["parent_run_id"]
    # the sweep killed halfway has a table too, from MLflow alone: its trials have not ended
    killed = _report(workdir, capsys, "resume")
    assert "Sweep resume: " in killed and "running or interrupted" in killed
    ends = [line.rsplit("|", 2)[1].strip() for line in killed.splitlines() if line.startswith(("| gp |", "| sn |"))]
    assert "unfinished" in ends and set(ends) <= {"unfinished", "completed"}, killed  # the other may have ended

    # resumed from an edited spec (as from a vidgan whose defaults changed): the trials keep what they started with
    edited = {**spec, "train": {**spec["train"], "n_critic": 3}}
    with caplog.at_level(logging.WARNING, logger="tune_jobs.sweep"):
        outcome = run_sweep(parse_spec(edited), name="resume", resume=True, verbose=0)
    assert [r.getMessage() for r in caplog.records if "--resume keeps" in r.getMessage()] == [
        "--resume keeps the setting the sweep started with: train.n_critic: 2 (the spec now gives 3)"]
    # by the parent run's id, once it has ended: the same trials, ended the same way after the same iterations
    # (FVDs may differ where the kill made a trial evaluate a step twice: MLflow's last value vs Tune's record)
    finished = _report(workdir, capsys, parent)
    for row in outcome.rows:
        assert f"| {row.variant} | sample | 0 |" in finished and "| completed |" in finished
    assert finished.count("| completed |") == 2 and "Sweep resume: 2 trials, 2 completed" in finished
    assert outcome.parent_run_id == parent
    assert sorted(r.status for r in outcome.rows) == ["completed", "completed"]
    nested = _nested(workdir, parent)
    assert len(nested) == 2  # no duplicate runs after the resume
    for run in nested:
        assert {m.step for m in _client(workdir).get_metric_history(run.info.run_id, "fvd")} == {2, 4}
        assert run.data.params["train.n_critic"] == "2"


def test_ctrl_c_ends_the_sweep_as_interrupted(workdir: Path) -> None:
    # Ctrl-C (SIGINT to the driver): Tune stops its trials, saves its state and returns as if the sweep had ended.
    # The sweep must say it was interrupted (exit 130, one line, parent run KILLED) rather than finish with a
    # table that reads the unfinished trial as stopped by ASHA. (--resume after an interruption:
    # test_interrupted_driver_resumes_the_sweep; a full resume after Ctrl-C was checked by hand, 12 of 12 iterations.)
    fifo = {"type": "fifo", "max_t": 12, "grace_period": 2}
    spec = _spec(workdir, name="ctrlc", scheduler=fifo, eval=LEAN_EVAL, train=LEAN_TRAIN)
    proc = _start_sweep(workdir, spec, "ctrlc")
    _wait_for_fvd_steps(workdir, "ctrlc", 1, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=HANG_S) == 130, (workdir / "ctrlc.log").read_text()[-3000:]
    log = (workdir / "ctrlc.log").read_text()
    assert log.rstrip().splitlines()[-1].startswith("vidgan sweep: interrupted: ")
    assert "Traceback" not in log and "stopped by ASHA" not in log and "| rank |" not in log
    parent_id = yaml.safe_load((workdir / "results" / "ctrlc" / STATE_FILE).read_text())["parent_run_id"]
    parent = _client(workdir).get_run(parent_id)
    assert parent.data.tags[tracking.TAG_END] == "interrupted" and parent.info.status == "KILLED"
    trial_runs = _nested(workdir, parent_id)  # delivering the spools must not reopen them; the sweep stopped them
    assert trial_runs and {r.info.status for r in trial_runs} == {"KILLED"}


def test_an_unreadable_tune_state_counts_as_ended(tmp_path: Path, caplog) -> None:
    # the check that tells Ctrl-C from an ended sweep must never fail a sweep that ran to its end
    from tune_jobs.sweep import tune_was_interrupted

    with caplog.at_level(logging.WARNING, logger="tune_jobs.sweep"):
        assert tune_was_interrupted(str(tmp_path)) is False
    assert any("could not read Tune's saved state" in r.getMessage() for r in caplog.records)


def test_pbt_exploit_copies_a_checkpoint_changes_the_config_and_mlflow_names_the_donor(workdir: Path) -> None:
    # Two trials, synchronous PBT every 2 iterations: at each interval the worse trial takes the better one's
    # checkpoint and a perturbed copy of its config (x1.2 or x0.8: resampling off).
    pbt = {
        "type": "pbt", "max_t": 4, "perturbation_interval": 2, "population": 2, "quantile_fraction": 0.5,
        "resample_probability": 0.0, "synch": True,
        "mutations": {"lr": {"low": 1e-5, "high": 1e-2, "log": True}, "penalty_weight": {"low": 1.0, "high": 50.0}},
    }
    # one I3D pass of 2 clips x 9 frames per evaluation: no EMA generator to score too, no interval, no samples
    lean_eval = {**LEAN_EVAL, "n_fake": 2, "bootstrap": 0}
    spec = parse_spec(_spec(workdir, name="pbt", scheduler=pbt, eval=lean_eval, train=LEAN_TRAIN))
    outcome = run_sweep(spec, name="pbt", verbose=0)
    assert sorted(r.status for r in outcome.rows) == ["completed", "completed"]

    runs = {r.data.tags[tracking.TAG_TRIAL]: r for r in _nested(workdir, outcome.parent_run_id)}
    assert len(runs) == 2
    clones = [r for r in runs.values() if tracking.TAG_CLONED_FROM in r.data.tags]
    assert clones, "no trial was cloned"
    client = _client(workdir)
    for clone in clones:
        donor = clone.data.tags[tracking.TAG_CLONED_FROM]
        me = clone.data.tags[tracking.TAG_TRIAL]
        assert donor in runs and donor != me  # the checkpoint it restored was written by the other trial
        at = int(clone.data.tags[tracking.TAG_CLONED_AT])
        assert at == 2  # the donor's checkpoint at the first interval
        # Ray's own record of the exploit: Tune's policy file for this trial names the donor and the new config
        policies = list((workdir / "results" / "pbt").glob(f"pbt_policy_{me}.txt"))
        assert policies, sorted(p.name for p in (workdir / "results" / "pbt").iterdir())
        policy = json.loads(policies[0].read_text().splitlines()[0])
        old_config, new_config = policy[4], policy[5]
        # each mutated value x1.2 or x0.8, put back inside its range of the spec (explore.clip_to_ranges): what the
        # bounds allow, so a value near a bound may come back as the bound itself (and one at a bound unchanged)
        for key, r in spec.scheduler.mutations.items():
            allowed = [min(r.high, max(r.low, old_config[key] * f)) for f in (1.2, 0.8)]
            assert new_config[key] in [pytest.approx(v, rel=1e-9) for v in allowed], (key, old_config, new_config)
        # the trainer ran on with the new config, not the hyperparameters stored in the donor's checkpoint
        lr = {m.step: m.value for m in client.get_metric_history(clone.info.run_id, "hp_lr")}
        weight = {m.step: m.value for m in client.get_metric_history(clone.info.run_id, "hp_penalty_weight")}
        assert lr[4] == pytest.approx(new_config["lr"]) and weight[4] == pytest.approx(new_config["penalty_weight"])
        donor_lr = {m.step: m.value for m in client.get_metric_history(runs[donor].info.run_id, "hp_lr")}
        assert donor_lr[2] == pytest.approx(old_config["lr"])
        if new_config["lr"] != pytest.approx(old_config["lr"]):  # not a value held at its bound
            assert lr[4] != pytest.approx(donor_lr[2])


def test_every_node_is_asked_for_its_python(workdir: Path) -> None:
    from tune_jobs import runtime

    nodes = runtime.check_cluster_python()  # a zero-CPU task on each live node of the real cluster
    assert nodes and all(tuple(v[:2]) == sys.version_info[:2] for v in nodes.values())
    with pytest.raises(runtime.ClusterMismatch) as caught:
        runtime.check_cluster_python(driver=(3, 99, 0))  # as a driver of another Python minor would see it
    message = str(caught.value)
    assert "\n" not in message and "Python 3.99.0" in message
    assert "Python {}.{}".format(*sys.version_info[:2]) in message


class _RecordingASHA:
    """Mixed into the sweep's own ASHAScheduler: what each result it judged held (this process runs Tune's loop)."""

    seen: list[dict] = []
    instance = None

    def on_trial_result(self, tune_controller, trial, result):  # noqa: ANN001, ANN201 - Tune's signature
        _RecordingASHA.instance = self
        _RecordingASHA.seen.append({"trial": trial.trial_id, "metric": self._metric, **result})
        return super().on_trial_result(tune_controller, trial, result)


def test_asha_decides_on_the_smoothed_score_and_the_table_aggregates_seeds(workdir: Path, monkeypatch) -> None:
    # One variant x 2 seeds, an evaluation every iteration, ASHA's first rung at 2: by then a trial has two FVDs,
    # and mean_last over k=2 differs from the latest one, so the rung shows which of the two ASHA was given.
    import csv

    from ray.tune.schedulers import ASHAScheduler

    from tune_jobs import sweep
    from tune_jobs.spec import SmoothingSpec

    build = sweep._scheduler

    def recording(spec):  # noqa: ANN001, ANN202
        scheduler = build(spec)
        assert isinstance(scheduler, ASHAScheduler)
        scheduler.__class__ = type("RecordingASHA", (_RecordingASHA, ASHAScheduler), {})
        return scheduler

    monkeypatch.setattr(sweep, "_scheduler", recording)
    _RecordingASHA.seen.clear()
    # the raw generator only (one I3D pass per evaluation): the EMA path is the ASHA sweep's above
    lean_eval = {**LEAN_EVAL, "every": 1, "smoothing": {"rule": "mean_last", "k": 2}}
    spec = parse_spec(_spec(workdir, name="smooth", seeds=[0, 1], eval=lean_eval, train=LEAN_TRAIN,
                            scheduler={"type": "asha", "max_t": 3, "grace_period": 2, "reduction_factor": 2}))
    outcome = run_sweep(spec, name="smooth", verbose=0)

    seen = _RecordingASHA.seen
    assert seen and {s["metric"] for s in seen} == {"fvd_smooth"}
    rule = SmoothingSpec(rule="mean_last", k=2)
    for trial in {s["trial"] for s in seen}:
        results = sorted((s for s in seen if s["trial"] == trial), key=lambda s: s["iteration"])
        fvds = [s["fvd"] for s in results]
        for i, s in enumerate(results):
            assert s["fvd_smooth"] == pytest.approx(rule.apply(fvds[: i + 1]), rel=1e-12)
            assert s["fvd_ci_low"] < s["fvd_ci_high"] and s["fvd_raw"] > 0
        # what ASHA recorded at its rung (iteration 2) is -fvd_smooth there, not -fvd
        at_rung = results[1]
        assert at_rung["fvd_smooth"] != at_rung["fvd"]
    rungs = dict(_RecordingASHA.instance._brackets[0]._rungs)  # milestone -> {trial id: -metric}
    assert rungs[2]
    for trial, reward in rungs[2].items():
        at_rung = next(s for s in seen if s["trial"] == trial and s["iteration"] == 2)
        assert reward == pytest.approx(-at_rung["fvd_smooth"], rel=1e-12)

    assert sorted(r.seed for r in outcome.rows) == [0, 1]
    (gp,) = outcome.variants
    assert (gp.variant, gp.n_seeds, gp.vs_best) == ("gp", 2, "best") and gp.fvd_ci95 > 0
    client = _client(workdir)
    (workdir / "smooth-dl").mkdir()
    path = Path(client.download_artifacts(outcome.parent_run_id, "comparison.csv", str(workdir / "smooth-dl")))
    table = list(csv.DictReader(path.open()))
    assert table[0]["n_seeds"] == "2" and {"fvd_mean", "fvd_ci95", "vs_best"} <= set(table[0])
