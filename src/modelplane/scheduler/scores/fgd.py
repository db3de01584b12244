"""FGD: place where the expected GPU fragmentation grows least (Fragmentation Gradient Descent).

For every way of serving the task on the node (each device a share fits on; for whole devices the
lowest-indexed free ones), the score is sigmoid((frag before - frag after) / 1000) on the 0-100
integer scale, as in the authors' plugin; the node scores its best way and the task gets those
devices. The integer rounding is part of the method's measured behaviour: with ties going to the
first node of a fixed order, equal-score nodes are filled one after another (an unrounded variant
with best-fit tie-breaking measured about 1 point lower on the openb default trace).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

from modelplane.core.placement import NodeFree
from modelplane.core.workload import TaskRequest
from modelplane.scheduler.scores._common import (
    MAX_NODE_SCORE,
    MILLI,
    exclusive_devices,
    feasible,
    is_share,
)
from modelplane.scheduler.scores.fragmentation import node_fragmentation, shape_of
from modelplane.scheduler.scoring import ScoreContext, register_scorer

Mix = Sequence[tuple[TaskRequest, float]]
# Fragmentation of a node's free capacity (CPU left, free share per device, model) against a mix.
Measure = Callable[[int, Sequence[int], str | None, Mix], float]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def fgd_options(
    cpu_left: int,
    device_free: Sequence[int],
    gpu_model: str | None,
    request: TaskRequest,
    mix: Mix,
    measure: Measure = node_fragmentation,
) -> list[tuple[float, tuple[int, ...]]]:
    """(fragmentation before - after, devices) for each way of serving the task, in device order."""
    before = measure(cpu_left, device_free, gpu_model, mix)
    cpu_after = cpu_left - request.cpu_milli
    return options_by(device_free, request, before, lambda after: measure(cpu_after, after, gpu_model, mix))


def options_by(
    device_free: Sequence[int], request: TaskRequest, before: float, after: Callable[[Sequence[int]], float]
) -> list[tuple[float, tuple[int, ...]]]:
    """``fgd_options`` for any measure: ``after`` is the fragmentation once the task's CPU (and
    whatever else the measure reads) is taken, given the devices left."""
    out: list[tuple[float, tuple[int, ...]]] = []
    if is_share(request):
        for i, f in enumerate(device_free):
            if f >= request.gpu_milli:
                left = list(device_free)
                left[i] -= request.gpu_milli
                out.append((before - after(left), (i,)))
        return out
    devices = exclusive_devices(device_free, request.gpu_count) if request.gpu_count else ()
    if len(devices) < request.gpu_count:
        return out
    left = list(device_free)
    for i in devices:
        left[i] -= MILLI if request.gpu_milli >= MILLI else request.gpu_milli
    out.append((before - after(left), devices))
    return out


def fgd_int_score(delta: float) -> int:
    """Rounded to a millionth of a milli-GPU first, so that summation order cannot flip a tie."""
    return int(sigmoid(round(delta, 6) / 1000.0) * MAX_NODE_SCORE)


def _mix(ctx: ScoreContext, request: TaskRequest) -> Mix:
    """The context's mix, else the request alone (with its memory, which only memory-aware measures read)."""
    return ctx.workload_mix or [(replace(shape_of(request), memory_mib=request.memory_mib), 1.0)]


class FGDScorer:
    name = "fgd"

    def __init__(self, measure: Measure = node_fragmentation) -> None:
        self.measure = measure  # how fragmentation is measured (FGD's own unless a variant says)

    def options(self, free: NodeFree, request: TaskRequest, mix: Mix) -> list[tuple[float, tuple[int, ...]]]:
        """(fragmentation before - after, devices) per way of serving the task on this node."""
        return fgd_options(free.cpu_milli, free.device_free, free.node.gpu_model, request, mix, self.measure)

    def score(self, free: NodeFree, request: TaskRequest, ctx: ScoreContext) -> tuple[float, tuple[int, ...]] | None:
        if not feasible(free, request):
            return None
        best: tuple[int, tuple[int, ...]] | None = None
        for delta, devices in self.options(free, request, _mix(ctx, request)):
            s = fgd_int_score(delta)
            if best is None or s > best[0]:
                best = (s, devices)
        return None if best is None else (float(best[0]), best[1])


@register_scorer("fgd")
def _factory() -> FGDScorer:
    return FGDScorer()
