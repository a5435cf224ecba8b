"""Will a model fit? Its parameters and activation memory, estimated from its config before anything is allocated.

A checkpoint or a sweep spec names a model by its config alone (``ModelConfig``: width, z_dim, frames, size, all
inside the schema), so a 2 KB file can ask for a generator of billions of parameters. The loaders
(:meth:`vidgan.trainer.Trainer.load`, :func:`vidgan.trainer.load_generator`) and ``vidgan sweep --check`` call
:func:`check_fits` first and refuse such a model in one line with the estimate, instead of allocating until the
kernel kills the process.

The estimate follows :mod:`vidgan.models` as it changes, without building the model asked for:

- parameters: counted exactly on the networks built on PyTorch's ``meta`` device (shapes only, no memory);
- activations per clip: the outputs of every leaf module in a forward pass (what autograd keeps for backward),
  measured on real networks of widths 1 and 2 and extrapolated (linear in the width);
- training at batch B: float32 weights, gradients and two Adam moments of both networks, the generator's moving
  average, and B x (4 critic passes: real and fake, then the gradient penalty's pass and its double backward,
  + 1 generator pass) of activations;
- sampling at batch B: the generator's weights and B x its activations;
- the FVD evaluation at batch B (:func:`evaluation_bytes`): the weights of the generator and of the I3D, and the
  larger of the generator's activations and, while the I3D scores the batch, the generated clips plus the I3D's
  peak: the tensors alive at once in one feature extraction (resize to 224 included), simulated on the ``meta``
  device and scaled by :data:`I3D_ALLOCATOR_OVERHEAD`; a trial also holds its training state meanwhile.

It is an estimate (within a factor of about two of the peak); a model is refused only when the estimate exceeds the
memory there is at all (the GPU's, or the machine's, its container's limit or the process's ``ulimit -v``), never
because other processes use some of it now.
"""

from __future__ import annotations

import functools
import os
import resource
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from vidgan.config import ModelConfig

GIB = 2**30
FLOAT_BYTES = 4
#: per parameter when training: weight, gradient, Adam's two moments (float32)
TRAIN_BYTES_PER_PARAM = 4 * FLOAT_BYTES
#: critic passes held per clip at once while training (see the module docstring)
CRITIC_PASSES = 4
#: the measured peak of an I3D feature extraction over the simulated one (tensors alive at once): the CPU
#: allocator's caching and oneDNN's convolution workspaces. Measured as the rise of the process's peak RSS
#: (VmHWM) in a process's first extraction of 9-frame clips on a CPU: batch 8 377 MiB and batch 16 742 MiB, where the
#: simulation says 237 and 473 MiB (1.59x and 1.57x; 4 and 8 clips of 16 frames: 301 and 591 MiB, 1.62x and 1.59x).
#: (With PyTorch's own max pools, before the CPU's sliced ones: 391 and 786 MiB measured, 320 and 640 simulated.)
I3D_ALLOCATOR_OVERHEAD = 1.6


class ModelTooLarge(ValueError):
    """A model whose estimated memory exceeds what the device has; the message gives the estimate."""


@dataclass(frozen=True)
class Footprint:
    """Parameters and per-clip activation elements of one model config."""

    generator_params: int
    critic_params: int
    generator_activations: int  # float elements per clip, one forward pass
    critic_activations: int

    def training_bytes(self, batch_size: int) -> int:
        params = self.generator_params + self.critic_params
        state = params * TRAIN_BYTES_PER_PARAM + self.generator_params * FLOAT_BYTES  # + the moving average
        act = batch_size * (CRITIC_PASSES * self.critic_activations + self.generator_activations)
        return state + act * FLOAT_BYTES

    def sampling_bytes(self, batch_size: int) -> int:
        return (self.generator_params + batch_size * self.generator_activations) * FLOAT_BYTES

    def state_bytes(self) -> int:
        """What a trial holds between its steps: weights, gradients and Adam moments of both networks, and the
        generator's moving average (what an evaluation in a trial comes on top of)."""
        return self.training_bytes(0)


def _leaf_outputs(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Elements of every leaf module's output in one forward pass of ``module`` on ``x``."""
    import torch

    total = 0

    def count(_m: torch.nn.Module, _inp: object, out: object) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel()

    handles = [m.register_forward_hook(count) for m in module.modules() if not any(True for _ in m.children())]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return total


def _skip_init() -> object:
    """A torch function mode in which in-place fills (weight initialisation) do nothing: on the meta device there is
    nothing to fill, and some of their meta kernels would import torch._dynamo, seconds of a command's start."""
    import torch
    from torch.overrides import TorchFunctionMode

    init = torch.nn.init
    fills = {torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.zero_, torch.Tensor.fill_,
             torch.Tensor.bernoulli_, torch.Tensor.random_, torch.Tensor.exponential_,
             *(getattr(init, name) for name in dir(init) if name.endswith("_") and not name.startswith("_"))}

    class SkipInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
            if func in fills:  # the tensor filled, given by position or by name
                return args[0] if args else next(v for v in (kwargs or {}).values() if isinstance(v, torch.Tensor))
            return func(*args, **(kwargs or {}))

    return SkipInit()


def _activations(model: ModelConfig, width: int) -> tuple[int, int]:
    """Leaf-output elements per clip of the generator and the critic of ``model`` at ``width``, measured in a real
    CPU forward pass of two clips (small widths only: MBs)."""
    import torch

    from vidgan.models import Critic, Generator

    small = model.model_copy(update={"width": width})
    with torch.random.fork_rng(devices=[]):  # the caller's random state is not touched
        gen, critic = Generator(small), Critic(small)
        n = 2  # batch statistics need more than one value per channel; per clip is half of it
        g = _leaf_outputs(gen, torch.zeros(n, small.z_dim))
        c = _leaf_outputs(critic, torch.zeros(n, 3, small.frames, small.size, small.size))
    return g // n, c // n


#: footprints measured in this process, by model config (JSON): each costs two small forward passes
_FOOTPRINTS: dict[str, Footprint] = {}


def footprint(model: ModelConfig) -> Footprint:
    """Parameters and activations of ``model`` without building it: parameters counted exactly on networks built on
    the ``meta`` device (no memory, no initialisation); activations measured in real forward passes at widths 1 and
    2 and extrapolated to ``model.width`` (every layer's channels are a multiple of the width, or fixed: the count
    is linear in it)."""
    import torch

    from vidgan.models import Critic, Generator

    key = model.model_dump_json()
    if key in _FOOTPRINTS:
        return _FOOTPRINTS[key]
    with torch.device("meta"), _skip_init():
        gen, critic = Generator(model), Critic(model)
    (g1, c1), (g2, c2) = _activations(model, 1), _activations(model, 2)
    w = model.width
    fp = Footprint(sum(p.numel() for p in gen.parameters()), sum(p.numel() for p in critic.parameters()),
                   g1 + (w - 1) * (g2 - g1), c1 + (w - 1) * (c2 - c1))
    _FOOTPRINTS[key] = fp
    return fp


def _live_bytes() -> Any:
    """A torch dispatch mode whose ``peak`` is the most bytes of tensors alive at once while it is on: each new
    tensor an operation returns counts its storage's bytes until it is freed; views and in-place results add none."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.live = self.peak = 0

        def _freed(self, n: int) -> None:
            self.live -= n

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
            out = func(*args, **(kwargs or {}))
            # by storage: under inference mode a view (unfold, split, a slice) is not marked as one
            given = {a.untyped_storage()._cdata for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.untyped_storage()._cdata not in given and not t._is_view():
                    n = t.untyped_storage().nbytes()
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(t, self._freed, n)
            return out

    return LiveBytes()


@functools.cache
def i3d_bytes(batch_size: int, frames: int, size: int) -> tuple[int, int]:
    """(weights, peak) bytes of the FVD's I3D scoring ``batch_size`` float clips of ``frames`` x ``size`` x ``size``:
    its weights, and the tensors alive at once in one feature extraction (the resize to 224 included), simulated on
    the ``meta`` device (shapes only, no memory) and scaled by :data:`I3D_ALLOCATOR_OVERHEAD`."""
    import torch

    from vidgan.fvd.i3d import I3D

    with torch.device("meta"), _skip_init():
        model = I3D()
    weights = sum(p.numel() for p in model.parameters()) * FLOAT_BYTES
    mode = _live_bytes()
    with torch.inference_mode(), mode:
        model.features(torch.zeros(batch_size, 3, frames, size, size, device="meta"))
    return weights, int(mode.peak * I3D_ALLOCATOR_OVERHEAD)


def evaluation_bytes(model: ModelConfig | None, batch_size: int, frames: int, size: int | None = None,
                     held: int = 0) -> dict[str, int]:
    """The memory of an FVD evaluation at ``batch_size`` (clips generated and scored at once) of ``frames`` frames,
    by part: ``i3d`` (weights and the extraction's peak), ``generator`` (weights, and its output or activations),
    ``held`` (what else stays meanwhile: a trial's training state) and ``total``. Without ``model`` (scoring clips
    from shards, of side ``size``) the generator's part is 0."""
    size = model.size if model is not None else size or 224
    weights, peak = i3d_bytes(batch_size, frames, size)
    gen = 0
    if model is not None:  # the generator's activations, or its clips (alive while the I3D scores them)
        fp = footprint(model)
        activations = batch_size * fp.generator_activations * FLOAT_BYTES
        video = batch_size * 3 * model.frames * model.size * model.size * FLOAT_BYTES
        gen = fp.generator_params * FLOAT_BYTES + max(activations - peak, video)  # max(activations, video + peak)
    return {"i3d": weights + peak, "generator": gen, "held": held, "total": weights + peak + gen + held}


def check_evaluation(model: ModelConfig | None, batch_size: int, frames: int, device: torch.device | str = "cpu",
                     subject: str = "the FVD evaluation", size: int | None = None, held: int = 0,
                     advice: str = "lower its batch size") -> int:
    """Refuse (:class:`ModelTooLarge`, nothing allocated) an FVD evaluation whose estimated memory
    (:func:`evaluation_bytes`) exceeds :func:`memory_limit` of ``device``; return the estimate in bytes."""
    parts = evaluation_bytes(model, batch_size, frames, size, held)
    have, where = memory_limit(device)
    if parts["total"] > have:
        shown = [f"I3D {parts['i3d'] / GIB:.1f} GiB"]
        shown += [f"generator {parts['generator'] / GIB:.1f} GiB"] if model is not None else []
        shown += [f"the trial's training state {held / GIB:.1f} GiB"] if held >= GIB / 20 else []
        raise ModelTooLarge(
            f"{subject} would not fit: scoring {batch_size} clips of {frames} frames at once needs about "
            f"{parts['total'] / GIB:.1f} GiB ({' + '.join(shown)}), more than {where}; {advice}; refused before "
            "allocating any of it"
        )
    return parts["total"]


def _proc_status_bytes(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    return None


def memory_limit(device: torch.device | str = "cpu") -> tuple[int, str]:
    """(bytes, what they are) of the memory a model on ``device`` can have at most: a GPU's total memory, or
    the least of this machine's memory, its container's limit, and the process's address-space and data limits
    (less what the process already maps)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return props.total_memory, f"the {props.total_memory / GIB:.1f} GiB of GPU {index} ({props.name})"
    limits: list[tuple[int, str]] = []
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        limits.append((phys, f"the {phys / GIB:.1f} GiB of memory of this machine"))
    except (ValueError, OSError):
        pass
    cgroup = _cgroup_limit()
    if cgroup is not None:
        limits.append((cgroup, f"the {cgroup / GIB:.1f} GiB memory limit of this container"))
    for rlimit, field, name in ((resource.RLIMIT_AS, "VmSize", "address-space limit (ulimit -v)"),
                                (resource.RLIMIT_DATA, "VmData", "data-size limit (ulimit -d)")):
        soft = resource.getrlimit(rlimit)[0]
        if soft != resource.RLIM_INFINITY:
            left = max(0, soft - _proc_status_bytes(field))
            limits.append((left, f"the {left / GIB:.1f} GiB left under this process's {soft / GIB:.1f} GiB {name}"))
    if not limits:
        return 2**62, "no known limit"
    return min(limits)


def describe(fp: Footprint) -> str:
    """``generator 1.2M + critic 3.4M parameters`` with readable units."""
    return f"generator {_count(fp.generator_params)} + critic {_count(fp.critic_params)} parameters"


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def check_fits(model: ModelConfig, batch_size: int, device: torch.device | str = "cpu", purpose: str = "training",
               subject: str = "the model") -> int:
    """Refuse (:class:`ModelTooLarge`, nothing allocated) a model whose estimated memory for ``purpose``
    (``training`` or ``sampling``) at ``batch_size`` exceeds :func:`memory_limit` of ``device``; return the
    estimate in bytes. ``subject`` starts the message (e.g. ``checkpoint ck.pt``)."""
    fp = footprint(model)
    need = fp.training_bytes(batch_size) if purpose == "training" else fp.sampling_bytes(batch_size)
    have, where = memory_limit(device)
    if need > have:
        what = ("weights, gradients, Adam moments and activations" if purpose == "training"
                else "generator weights and activations")
        raise ModelTooLarge(
            f"{subject} asks for a model that would not fit: width {model.width}, z_dim {model.z_dim}, "
            f"{model.frames}x{model.size}x{model.size} clips make {describe(fp)}, about {need / GIB:.1f} GiB for "
            f"{purpose} at batch {batch_size} ({what}), more than {where}; refused before allocating any of it"
        )
    return need
