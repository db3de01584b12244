"""GpuPacking: share an already-shared device first, then a used node, then an idle node.

The published baseline's three bands, high to low: (1) the task fits on partly used devices:
100 - (free share of those devices)/10, at least 50; (2) it needs whole devices of a node that is
partly used: 50 - whole devices taken, at least 33; (3) the node is idle: 33 - its device count.
CPU-only tasks score 0 everywhere (any feasible node).
"""

from __future__ import annotations

from modelplane.core.placement import NodeFree
from modelplane.core.workload import TaskRequest
from modelplane.scheduler.scores._common import MAX_NODE_SCORE, MILLI, best_fit_devices, feasible
from modelplane.scheduler.scoring import ScoreContext, register_scorer


def gpupacking_score(device_free: list[int], request: TaskRequest) -> int | None:
    if request.total_gpu_milli <= 0:
        return 0
    whole_free = sum(1 for f in device_free if f == MILLI)
    if whole_free == len(device_free):
        return max(MAX_NODE_SCORE // 3 - whole_free, whole_free)
    order = sorted(range(len(device_free)), key=lambda i: device_free[i])  # stable: least free first
    need, whole_used, used = request.gpu_count, 0, []
    for i in order:
        if need == 0:
            break
        if request.gpu_milli <= device_free[i]:
            need -= 1
            used.append(i)
            if device_free[i] == MILLI:
                whole_used += 1
    if need:
        return None
    if whole_used > 0:
        return max(MAX_NODE_SCORE // 2 - whole_used, MAX_NODE_SCORE // 3)
    free_pct = sum(device_free[i] * 100 // MILLI for i in used)
    return max(MAX_NODE_SCORE - free_pct // 10, MAX_NODE_SCORE // 2)


class GpuPackingScorer:
    name = "gpupacking"

    def score(self, free: NodeFree, request: TaskRequest, ctx: ScoreContext) -> tuple[float, tuple[int, ...]] | None:
        if not feasible(free, request):
            return None
        s = gpupacking_score(list(free.device_free), request)
        if s is None:
            return None
        return float(s), best_fit_devices(free.device_free, request)


@register_scorer("gpupacking")
def _factory() -> GpuPackingScorer:
    return GpuPackingScorer()
