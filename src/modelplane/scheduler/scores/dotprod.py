"""DotProd: Tetris-style alignment of the request with what the node has free (published baseline).

As configured in the FGD paper's experiments (dimension extension 'merge', normalisation 'max'):
the node's free vector [CPU, total GPU share] and the request's vector are both divided by the
largest node spec (128 CPUs, 8 GPUs); the node scores 100 x (1 - dot/2), truncated to an integer,
so that the node a task takes least of wins. Devices are chosen best fit.
"""

from __future__ import annotations

from modelplane.core.placement import NodeFree
from modelplane.core.workload import TaskRequest
from modelplane.scheduler.scores._common import (
    MAX_NODE_SCORE,
    MAX_SPEC_CPU_MILLI,
    MAX_SPEC_GPU_MILLI,
    best_fit_devices,
    feasible,
)
from modelplane.scheduler.scoring import ScoreContext, register_scorer


def dotprod_score(cpu_left: int, gpu_left_total: int, request: TaskRequest) -> int:
    dot = 0.0
    dot += (cpu_left / MAX_SPEC_CPU_MILLI) * (request.cpu_milli / MAX_SPEC_CPU_MILLI)
    dot += (gpu_left_total / MAX_SPEC_GPU_MILLI) * (request.total_gpu_milli / MAX_SPEC_GPU_MILLI)
    return int(MAX_NODE_SCORE * (1.0 - dot / 2.0))


class DotProdScorer:
    name = "dotprod"

    def score(self, free: NodeFree, request: TaskRequest, ctx: ScoreContext) -> tuple[float, tuple[int, ...]] | None:
        if not feasible(free, request):
            return None
        return float(dotprod_score(free.cpu_milli, free.gpu_free_milli, request)), best_fit_devices(free.device_free, request)


@register_scorer("dotprod")
def _factory() -> DotProdScorer:
    return DotProdScorer()
