"""Helpers the score plugins share: the published scorers' constants and device choices.

The constants are those of the FGD authors' simulator (kubernetes-scheduler-simulator), so that our
scorers reproduce the published baselines: a node is normalised against the largest node spec of
the openb cluster (128 CPUs, 8 GPUs), and scores live on Kubernetes' integer 0-100 scale.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelplane.core.placement import NodeFree
from modelplane.core.workload import TaskRequest

MILLI = 1000
MAX_SPEC_CPU_MILLI = 128_000
MAX_SPEC_GPU_MILLI = 8_000
MAX_NODE_SCORE = 100


def model_allowed(gpu_model: str | None, request: TaskRequest) -> bool:
    """A request with no model list may use any node; one with a list only nodes of those models."""
    if not request.gpu_models:
        return True
    return gpu_model is not None and gpu_model in request.gpu_models


def feasible(free: NodeFree, request: TaskRequest) -> bool:
    """Capacity (CPU, memory, devices) and accelerator model; the hard filters come before scoring."""
    if request.wants_gpu and (free.node.gpu_count == 0 or not model_allowed(free.node.gpu_model, request)):
        return False
    return free.fits(request)


def exclusive_devices(device_free: Sequence[int], count: int) -> tuple[int, ...]:
    """The lowest-indexed whole free devices, as the reference simulator allocates them."""
    whole = [i for i, f in enumerate(device_free) if f == MILLI]
    return tuple(whole[:count])


def best_fit_devices(device_free: Sequence[int], request: TaskRequest) -> tuple[int, ...]:
    """The reference 'best' device choice: a share goes to the fullest device it fits on."""
    if request.gpu_count == 0:
        return ()
    if request.gpu_milli < MILLI:
        best = -1
        for i, f in enumerate(device_free):
            if f >= request.gpu_milli and (best == -1 or f < device_free[best]):
                best = i
        return (best,) if best >= 0 else ()
    return exclusive_devices(device_free, request.gpu_count)


def is_share(request: TaskRequest) -> bool:
    return request.gpu_count == 1 and request.gpu_milli < MILLI
