"""BestFit: the node left with the least free CPU and GPU after placement (published baseline).

Score = 100 x (1 - (0.5 x CPU left / 128 CPUs + 0.5 x GPU left / 8 GPUs)), truncated to an integer
as Kubernetes scores are; ties are broken by the framework.
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


def bestfit_score(cpu_left: int, gpu_left_total: int, request: TaskRequest) -> int:
    # Same operation order as the reference, so that truncation gives the very same integers.
    left = 0.0
    left += (cpu_left - request.cpu_milli) / MAX_SPEC_CPU_MILLI * 0.5
    left += (gpu_left_total - request.total_gpu_milli) / MAX_SPEC_GPU_MILLI * 0.5
    return int((1.0 - left) * MAX_NODE_SCORE)


class BestFitScorer:
    name = "bestfit"

    def score(self, free: NodeFree, request: TaskRequest, ctx: ScoreContext) -> tuple[float, tuple[int, ...]] | None:
        if not feasible(free, request):
            return None
        s = bestfit_score(free.cpu_milli, free.gpu_free_milli, request)
        return float(s), best_fit_devices(free.device_free, request)


@register_scorer("bestfit")
def _factory() -> BestFitScorer:
    return BestFitScorer()
