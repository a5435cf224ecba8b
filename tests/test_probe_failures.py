"""The hostile probe of cb3a639 (#30), items 5, 6, 7, 9, 10 and 11: an alias bomb in an override, the FVD
evaluation's memory, broken plug-ins, an unusable ``$VIDGAN_CACHE``, odd values in a report's store, and full disks.

Every expected failure is one line naming what was wrong; CLIs run as processes of their own (``python -m
tune_jobs.main``, forked from a warm server: :mod:`warm_cli`) where a traceback or a hang is what the probe saw.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import warm_cli
from empty_store import empty_store

ROOT = Path(__file__).resolve().parents[1]
#: a deadline only a hang reaches (the refusals below answer in about a second, imports included)
HANG_S = 120


def vidgan(*argv: object, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = HANG_S,
           memory_gib: float | None = None) -> subprocess.CompletedProcess:
    """``vidgan ARGV`` in a process of its own (``python -m tune_jobs.main``, forked from a server that has imported
    torch and MLflow: :mod:`warm_cli`), with ``env`` added to the environment; ``memory_gib`` caps its address space
    (``ulimit -v``: what vidgan.budget takes as the memory there is)."""
    path = os.pathsep.join(p for p in (str(ROOT), (env or {}).get("PYTHONPATH", "")) if p)
    full = {**os.environ, **(env or {}), "PYTHONPATH": path}
    rlimits = {} if memory_gib is None else {"RLIMIT_AS": int(memory_gib * 2**30)}
    return warm_cli.run("tune_jobs.main", argv, env=full, cwd=cwd, rlimits=rlimits, timeout=timeout)


def one_line(r: subprocess.CompletedProcess, *words: str, progress: str | None = None) -> str:
    """Exit 2, no traceback, exactly one line on stderr (besides lines starting with ``progress``), naming each of
    ``words``; the line."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if not (progress and line.startswith(progress))]
    assert r.returncode == 2 and len(lines) == 1, (r.args, r.returncode, r.stderr)
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# ------------------------------------------------------------------------- 5: a YAML alias bomb in an override


def alias_bomb(levels: int = 8, width: int = 9) -> str:
    """``[&a [1,...], &b [*a,...], ...]``: ``width ** levels`` items from a few hundred bytes."""
    names = "abcdefghijklmnop"
    parts = [f"&a [{','.join(['1'] * width)}]"]
    parts += [f"&{names[i]} [{','.join([f'*{names[i - 1]}'] * width)}]" for i in range(1, levels)]
    return f"[{', '.join(parts)}]"


def test_an_alias_bomb_in_an_override_is_refused_in_one_line() -> None:
    """#30 item 5: 'seeds=<bomb>' (255 bytes, 9**8 items once expanded) hung `sweep --check` (no output at
    240 s, memory growing); it is refused before anything expands it."""
    item = f"seeds={alias_bomb()}"
    assert len(item) < 300
    r = vidgan("sweep", ROOT / "tune_jobs" / "demo.yaml", item, "--check")
    one_line(r, "seeds=", "YAML aliases (*a) are not allowed in an override")


def test_a_spec_file_whose_aliases_expand_to_billions_is_refused_in_one_line(made: tuple[Path, Path],
                                                                             tmp_path: Path) -> None:
    """#30 item 5, the file's side: a spec file holding an alias bomb was refused only when the schema met it (at
    once for `seeds`), and hung as soon as any override was given (OmegaConf copies the spec written out)."""
    spec = tiny_spec(tmp_path, made[1], seeds=alias_bomb())
    for extra in ([], ["train.lr=2e-4"]):
        one_line(vidgan("sweep", spec, *extra, "--check"), f"{spec}: holds over 100000 values once its YAML aliases")


def test_an_override_without_aliases_still_reads_as_yaml() -> None:
    from tune_jobs.overrides import apply

    raw = {"seeds": [0], "train": {"lr": 1e-4}}
    assert apply(raw, ["seeds=[1, 2]", "train.lr=2e-4"]) == {"seeds": [1, 2], "train": {"lr": 2e-4}}
    assert apply(raw, ["seeds='*a'"])["seeds"] == "*a"  # quoted: text, not an alias (the schema judges it later)


# ------------------------------------------------------------------------------------------- shared data


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sources, shards): three real videos and the 3-shard, 6-clip dataset ingested from them."""
    from videogen import write_video

    from vidgan.ingest import IngestConfig, ingest

    root = tmp_path_factory.mktemp("probe30")
    src = root / "src"
    src.mkdir()
    for i in range(3):
        write_video(src / f"v{i}.mp4", frames=32, width=40, height=32)
    ingest([str(src)], root / "shards", IngestConfig(frames=16, size=32, shard_mb=0.01, parallel="local"))
    return src, root / "shards"


def tiny_spec(folder: Path, shards: Path, **extra: str) -> Path:
    """A one-trial CPU sweep spec over ``shards`` (its store and results in ``folder``); ``extra``: more top-level
    YAML lines by key."""
    lines = {
        "name": "p30",
        "datasets": f"[{{name: tiny, path: {shards}}}]",
        "model": "{frames: 16, size: 32, width: 4}",
        "train": "{batch_size: 2}",
        "variants": "[gp]",
        "seeds": "[0]",
        "eval": "{every: 2, n_real: 4, n_fake: 4, frames: 9, batch_size: 2, grid: 0}",
        "scheduler": "{type: asha, max_t: 4, grace_period: 2, reduction_factor: 2}",
        "resources": "{cpu: 1, gpu: 0, data_cpu: 0, threads: 1}",
        "mlflow": f"{{tracking_uri: 'sqlite:///{folder}/mlflow.db', experiment: p30}}",
        "storage_path": str(folder / "results"),
        **extra,
    }
    path = folder / "spec.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in lines.items()))
    return path


# ------------------------------------------------------------------------ 9: VIDGAN_CACHE that cannot be made


def test_a_cache_under_a_regular_file_costs_the_cache_only(made: tuple[Path, Path], tmp_path: Path) -> None:
    """#30 item 9: VIDGAN_CACHE under a regular file stopped train and ingest with '[Errno 20] Not a directory'
    (not naming VIDGAN_CACHE) and `sweep --check` with a traceback; each now warns once naming it and works."""
    src, shards = made
    (tmp_path / "afile").write_text("a file, not a folder\n")
    env = {"VIDGAN_CACHE": str(tmp_path / "afile" / "cache")}
    shutil.copytree(shards, tmp_path / "again")  # a re-run verifies the shards it keeps (the cache's stamps)
    runs = [
        vidgan("train", "--data", shards, "--width", 4, "--batch-size", 2, "--n-critic", 1, "--iterations", 1,
               "--device", "cpu", "--checkpoint", tmp_path / "c.pt", env=env),
        vidgan("ingest", src, "--out", tmp_path / "again", "--frames", 16, "--size", 32, "--shard-mb", 0.01, env=env),
        vidgan("sweep", tiny_spec(tmp_path, shards), "--check", env=env),
    ]
    for r in runs:
        assert r.returncode == 0 and "Traceback" not in r.stderr, (r.args, r.stderr)
        warned = [line for line in r.stderr.splitlines() if "VIDGAN_CACHE=" in line]
        assert len(warned) == 1 and "cannot be used as vidgan's cache" in warned[0], r.stderr
    assert (tmp_path / "c.pt").is_file() and (tmp_path / "again" / "manifest.json").is_file()
    assert (tmp_path / "afile").read_text() == "a file, not a folder\n"


# --------------------------------------------------------------------------- 10: odd values in the report's store


def odd_store(folder: Path, odd: bool = True) -> str:
    """A SQLite MLflow store holding one sweep whose trials logged a seed that is not an integer and an infinite
    FVD: trial a (seed 'zero', FVD inf then 30), trial b (seed '1', only inf); not ``odd``: seeds 0 and 1, FVDs 40
    then 30, and 35. Its URI."""
    from mlflow import MlflowClient

    from tune_jobs import tracking

    uri = empty_store(folder / "mlflow.db")  # a copy of an empty store MLflow made (making one takes ~3 s)
    exp = tracking.ensure_experiment(uri, "p30")
    parent = tracking.start_parent_run(uri, exp, "odd")
    client = MlflowClient(uri)
    trials = (("a", "zero", [math.inf, 30.0]), ("b", "1", [math.inf])) if odd else (("a", "0", [40.0, 30.0]),
                                                                                   ("b", "1", [35.0]))
    for trial, seed, fvds in trials:
        run = client.create_run(exp, run_name=trial, tags={tracking.TAG_PARENT: parent, tracking.TAG_KIND: "trial",
                                                           tracking.TAG_TRIAL: trial, tracking.TAG_VARIANT: "gp",
                                                           tracking.TAG_DATASET: "tiny"})
        client.log_param(run.info.run_id, "seed", seed)
        for step, value in enumerate(fvds, start=1):
            client.log_metric(run.info.run_id, "fvd", value, step=2 * step)
        client.set_terminated(run.info.run_id)
    client.set_terminated(parent)
    return uri


def test_report_reads_a_seed_that_is_no_integer_and_never_calls_inf_a_best_fvd(tmp_path: Path, capsys) -> None:
    """#30 item 10: `vidgan report` stopped with a traceback (int('zero')) and showed inf as a best FVD."""
    from tune_jobs.main import main

    uri = odd_store(tmp_path)
    assert main(["report", "odd", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "inf" not in out, out
    trials = [line for line in out.splitlines() if line.startswith("| gp | tiny |")]
    assert len(trials) == 2, out
    assert "| zero | 30.000 |" in trials[0], trials  # the scored trial first, its seed as logged
    assert "| 1 | - |" in trials[1], trials  # only an infinite FVD: unscored


# ------------------------------------------------------------------------------------------- 11: full disks


@pytest.fixture
def small_disk(tmp_path: Path):
    """A function ``(bytes) -> folder`` mounting a tmpfs of that size (root only; skipped where it cannot be
    mounted), and ``grow(folder, bytes)`` to free the disk; unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                           text=True) if os.geteuid() == 0 else None
        if r is None or r.returncode:
            pytest.skip(f"a small disk needs a tmpfs mount (root): {r.stderr.strip() if r else 'not root'}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


def grow(folder: Path, size: int) -> None:
    """Give the tmpfs at ``folder`` ``size`` bytes: the disk freed."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True)


def test_a_full_disk_during_ingest_says_what_was_kept_and_how_to_resume(made: tuple[Path, Path], small_disk) -> None:
    """#30 item 11: a full disk ended the ingest with a bare '[Errno 28] No space left on device', where the README
    promises what was kept and how to resume; then the same command, with space, resumes and loses nothing."""
    src, shards = made
    sizes = sorted(p.stat().st_size for p in shards.glob("*.parquet"))
    disk = small_disk(sizes[0] + sizes[1] + 48 * 1024)  # two shards of the three, and the manifest
    out = disk / "out"
    argv = ["ingest", src, "--out", out, "--frames", 16, "--size", 32, "--shard-mb", 0.01]
    line = one_line(vidgan(*argv), "No space left on device", f"{out} keeps 2 whole shard(s) with 4 clips",
                    "run the same command again to resume", progress="3 source(s) to decode")
    assert "[Errno" not in line
    grow(disk, 4 * 2**20)
    r = vidgan(*argv)
    assert r.returncode == 0 and "1 source(s) to decode, 2 already in the manifest" in r.stderr, r.stderr
    assert '"clips": 6' in r.stdout


def test_report_out_on_a_full_disk_leaves_no_half_file(tmp_path: Path, small_disk) -> None:
    """#30 item 11: `report --out` on a full disk left a truncated report.html (and the tables), which the next run
    refused to replace; now it leaves nothing of its own there, and the next run writes the report."""
    uri = odd_store(tmp_path, odd=False)
    disk = small_disk(2**20)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (2**20 - 40 * 1024))  # room for the tables and the curves, not for the page
    out = disk / "report"
    one_line(vidgan("report", "odd", "--tracking-uri", uri, "--out", out), "No space left on device", "could not write",
             "no file of this report was left there")
    assert sorted(p.name for p in out.iterdir()) == []
    filler.unlink()
    r = vidgan("report", "odd", "--tracking-uri", uri, "--out", out)
    assert r.returncode == 0, r.stderr
    assert (out / "report.html").read_text().endswith("</html>\n")


def test_report_refuses_an_empty_file_as_its_store_and_leaves_it_empty(tmp_path: Path) -> None:
    """#30 item 11: `report` (read-only) wrote MLflow's tables into a 0-byte file given as the store."""
    empty = tmp_path / "empty.db"
    empty.touch()
    one_line(vidgan("report", "--tracking-uri", f"sqlite:///{empty}"), "empty file (0 bytes)", "not an MLflow store")
    assert empty.stat().st_size == 0


# ---------------------------------------------------------------------------------------- 7: broken plug-ins

#: modules of an installed package "fakeplug" (name -> source), registered by its entry_points.txt below
FAKE_MODULES = {
    "fakeplug_boom": 'raise RuntimeError("boom at import")\n',
    "fakeplug_obj": "THING = 42\n",
    "fakeplug_gp": 'PRESET = {"penalty": "gp"}\n',
    "fakeplug_bad": 'PRESET = {"penalty": "no_such_penalty"}\n',
    "fakeplug_good": '"""A good plug-in: gp at weight 5."""\nPRESET = {"penalty": "gp", "penalty_weight": 5.0}\n',
    "fakeplug_raises": 'EXTENSIONS = frozenset({".boom"})\n\ndef decode(src, cfg, out):\n'
                       '    raise ValueError("cannot read " + src.path)\n',
    "fakeplug_garbage": 'import numpy as np\nEXTENSIONS = frozenset({".junk"})\n\ndef decode(src, cfg, out):\n'
                        '    out.clips, out.starts = np.zeros((1, 2, 3)), [0]\n',
    "fakeplug_broken": "import fakeplug_no_such_module\n",
}
FAKE_ENTRY_POINTS = """[vidgan.variants]
boom = fakeplug_boom
missing = fakeplug_nothere
notmod = fakeplug_obj:THING
gp = fakeplug_gp
badpreset = fakeplug_bad
good = fakeplug_good

[vidgan.ingest_sources]
raising = fakeplug_raises
garbage = fakeplug_garbage
broken = fakeplug_broken
"""
#: the broken variant plug-ins, each warned about once
BROKEN_VARIANTS = ("'boom'", "'missing'", "'notmod'", "'gp'", "'badpreset'")


@pytest.fixture
def fakeplug(tmp_path: Path) -> dict[str, str]:
    """The environment of a process that has the package "fakeplug" installed the way pip installs one: its modules
    and its ``fakeplug-0.1.dist-info`` (METADATA, entry_points.txt) in a folder on ``sys.path``."""
    site = tmp_path / "site"
    info = site / "fakeplug-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(FAKE_ENTRY_POINTS)
    for name, text in FAKE_MODULES.items():
        (site / f"{name}.py").write_text(text)
    return {"PYTHONPATH": str(site)}


def plugin_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vidgan: warning:") and "plug-in" in line]


def test_broken_variant_plugins_cost_their_own_names_in_train_and_sweep(made: tuple[Path, Path], tmp_path: Path,
                                                                        fakeplug: dict[str, str]) -> None:
    """#30 item 7: a variant plug-in that raises at import, names a missing module or is not a module was a
    traceback in train and sweep; one that shadows gp or has a bad PRESET one line in train, a traceback in sweep.
    Each now costs its own name only: one warning naming it and its package, and the good plug-in trains."""
    _, shards = made
    train = vidgan("train", "--data", shards, "--variant", "good", "--width", 4, "--batch-size", 2, "--n-critic", 1,
                   "--iterations", 1, "--device", "cpu", "--checkpoint", tmp_path / "c.pt", env=fakeplug)
    check = vidgan("sweep", tiny_spec(tmp_path, shards, variants="[gp, good]"), "--check", env=fakeplug)
    for r in (train, check):
        assert r.returncode == 0 and "Traceback" not in r.stderr, (r.args, r.stderr)
        warned = plugin_warnings(r.stderr)
        assert len(warned) == len(BROKEN_VARIANTS), r.stderr
        for name in BROKEN_VARIANTS:
            assert sum(f"variant plug-in {name}" in w and "package fakeplug" in w for w in warned) == 1, (name, warned)
    assert "already taken by the built-in vidgan.loss_variants.gp" in train.stderr
    assert "its PRESET is not a valid variant" in train.stderr and "sweep p30: 2 trial(s), 2 variant(s)" in check.stdout


def test_broken_source_kinds_and_decoders_cost_their_own_sources(made: tuple[Path, Path], tmp_path: Path,
                                                                 fakeplug: dict[str, str]) -> None:
    """#30 item 7: any broken source-kind plug-in made every ingest a traceback, even of .mp4 files, and a decoder
    that raised or returned garbage aborted the whole ingest, keeping nothing. Now: one warning for the broken kind,
    each failing decoder's source skipped with its reason, the videos ingested."""
    import json

    src, _ = made
    folder = shutil.copytree(src, tmp_path / "src")
    (folder / "a.boom").write_bytes(b"boom")
    (folder / "b.junk").write_bytes(b"junk")
    r = vidgan("ingest", folder, "--out", tmp_path / "out", "--frames", 16, "--size", 32, env=fakeplug)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    warned = plugin_warnings(r.stderr)
    assert len(warned) == 1 and "source kind plug-in 'broken'" in warned[0] and "package fakeplug" in warned[0]
    sources = json.loads((tmp_path / "out" / "manifest.json").read_text())["sources"]
    assert [sources[f"v{i}.mp4"]["status"] for i in range(3)] == ["ok"] * 3
    assert sources["a.boom"]["status"] == "skipped" and "ValueError: cannot read" in sources["a.boom"]["reason"]
    assert sources["b.junk"]["status"] == "skipped" and "float64 [1, 2, 3]" in sources["b.junk"]["reason"]
    assert "skipped a.boom:" in r.stderr and "skipped b.junk:" in r.stderr


# ------------------------------------------------------------------------------ 6: the FVD evaluation's memory


def small_checkpoint(path: Path) -> Path:
    from vidgan.config import ModelConfig, TrainConfig
    from vidgan.trainer import Trainer
    from vidgan.variants import get_variant

    Trainer(ModelConfig(frames=16, size=32, width=4), get_variant("gp"), TrainConfig(batch_size=2, n_critic=1),
            device="cpu").save(path)
    return path


def test_check_counts_the_memory_of_the_evaluation(made: tuple[Path, Path], tmp_path: Path) -> None:
    """#30 item 6: `eval.n_fake=512 eval.batch_size=512` passed `--check`, and that evaluation peaks at ~25 GiB
    (the I3D scoring 512 clips at once); it is refused in one line with the estimate. Each process is capped at
    6 GiB, the memory vidgan.budget then takes as the machine's; the spec's own eval batch (2) still passes."""
    spec = tiny_spec(tmp_path, made[1])
    line = one_line(vidgan("sweep", spec, "eval.n_fake=512", "eval.batch_size=512", "--check", memory_gib=6),
                    "sweep p30: the trials' FVD evaluation would not fit", "scoring 512 clips of 9 frames at once",
                    "lower eval.batch_size")
    # 23.7 GiB at 9 frames: the probe saw ~25 GiB with PyTorch's max pools; the CPU's sliced pools measure ~4% less
    assert "GiB (I3D 23." in line, line
    ok = vidgan("sweep", spec, "--check", memory_gib=6)
    assert ok.returncode == 0 and "GiB to evaluate at eval batch 2 (estimates)" in ok.stdout, ok.stderr


def test_fvd_checks_the_batch_it_scores_not_one_clip(made: tuple[Path, Path], tmp_path: Path) -> None:
    """#30 item 6: `vidgan fvd --batch-size B` checked the generator at batch 1 and none of the I3D's memory, and
    failed minutes later with PyTorch's allocator message; now scoring 128 clips of 16 frames at once (~9 GiB) is
    refused up front in one line with the estimate, from a checkpoint or from fake shards (capped at 6 GiB)."""
    shards = made[1]
    ckpt = small_checkpoint(tmp_path / "c.pt")
    common = ["--n", 128, "--batch-size", 128, "--frames", 16]
    line = one_line(vidgan("fvd", "--real", shards, "--checkpoint", ckpt, *common, memory_gib=6),
                    f"the FVD evaluation of checkpoint {ckpt} would not fit", "scoring 128 clips of 16 frames at once",
                    "I3D 9.", "lower --batch-size")
    assert "refused before allocating" in line
    one_line(vidgan("fvd", "--real", shards, "--fake", shards, *common, memory_gib=6), "would not fit",
             "scoring 128 clips of 16 frames at once", "lower --batch-size")


def test_the_evaluation_estimate_grows_with_the_batch_and_the_frames() -> None:
    """The I3D's part is linear in the clips scored at once (a batch of 8 clips of 16 frames: ~595 MiB, measured
    591 MiB as the rise of a CPU process's peak RSS), and the generator's part adds its clips."""
    from vidgan import budget
    from vidgan.config import ModelConfig

    model = ModelConfig(frames=16, size=32, width=4)
    one, eight = (budget.evaluation_bytes(model, b, 16) for b in (1, 8))
    weights = budget.i3d_bytes(1, 16, 32)[0]
    assert 7.5 < (eight["i3d"] - weights) / (one["i3d"] - weights) < 8.5
    assert 550 < (eight["i3d"] - weights) / 2**20 < 650
    assert budget.evaluation_bytes(model, 8, 9)["i3d"] < eight["i3d"]
    assert eight["generator"] > one["generator"] > 0 and budget.evaluation_bytes(None, 8, 16, 32)["generator"] == 0
