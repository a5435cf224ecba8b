"""What a trial asks Ray for: its trainable's CPUs/GPU plus a bundle for its Ray Data tasks.

Ray Data's tasks are not placed in a trial's reserved resources by default, so with trials holding every
CPU a trial that streams data would wait forever. Each trial therefore reserves ``[{"CPU": cpu, "GPU":
gpu}, {"CPU": data_cpu}]`` (bundle 0 runs the trainable); :mod:`vidgan.ray_stream` finds the data bundle
of the placement group it runs in and schedules the dataset's tasks there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ray import tune


def trial_resources(cpu: float = 1.0, gpu: float = 0.0, data_cpu: float = 1.0) -> tune.PlacementGroupFactory:
    """A Tune trial's resource request: bundle 0 for the trainable, bundle 1 for its Ray Data tasks.

    ``data_cpu=0`` requests no data bundle (then stream with :func:`vidgan.data.arrow_clip_batches`).
    """
    from ray import tune

    if min(cpu, gpu, data_cpu) < 0:
        raise ValueError(f"resources must be >= 0, got cpu={cpu} gpu={gpu} data_cpu={data_cpu}")
    head = {k: v for k, v in (("CPU", cpu), ("GPU", gpu)) if v > 0}
    bundles = [head] + ([{"CPU": float(data_cpu)}] if data_cpu > 0 else [])
    return tune.PlacementGroupFactory(bundles, strategy="PACK")
