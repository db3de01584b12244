"""GpuClustering: put tasks of one GPU shape together (published baseline).

Tasks are tagged by shape ('share' for a fraction of one device, 'k-gpu' for k whole devices).
Bands: node hosting only this tag (75-100), this tag among others (50-75), idle node (25-50),
other tags only (0-25); within a band, fuller nodes score higher. CPU-only tasks score 0.

The tags on a node are not part of ``NodeFree``; the scorer takes a function that gives them
(the simulator tracks them exactly). Without one, they are inferred from the devices: a partly
used device means 'share' and a fully used device means '1-gpu' (approximate).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from modelplane.core.placement import NodeFree
from modelplane.core.workload import TaskRequest
from modelplane.scheduler.scores._common import (
    MAX_NODE_SCORE,
    MAX_SPEC_GPU_MILLI,
    MILLI,
    best_fit_devices,
    feasible,
)
from modelplane.scheduler.scoring import ScoreContext, register_scorer

TagsOf = Callable[[NodeFree], Mapping[str, int]]


def shape_tag(request: TaskRequest) -> str | None:
    if request.gpu_count == 0:
        return None
    if request.gpu_count == 1 and request.gpu_milli < MILLI:
        return "share"
    return f"{request.gpu_count}-gpu"


def inferred_tags(free: NodeFree) -> dict[str, int]:
    tags: dict[str, int] = {}
    for f in free.device_free:
        if 0 < f < MILLI:
            tags["share"] = tags.get("share", 0) + 1
        elif f == 0:
            tags["1-gpu"] = tags.get("1-gpu", 0) + 1
    return tags


def gpuclustering_score(gpu_left_total: int, tags: Mapping[str, int], request: TaskRequest) -> int:
    tag = shape_tag(request)
    if tag is None:
        return 0
    quarter = MAX_NODE_SCORE // 4
    fullness = quarter * (MAX_SPEC_GPU_MILLI - gpu_left_total) // MAX_SPEC_GPU_MILLI
    present = {k for k, v in tags.items() if v > 0}
    if tag in present:
        return fullness + (3 * quarter if len(present) == 1 else 2 * quarter)
    return fullness + (quarter if not present else 0)


class GpuClusteringScorer:
    name = "gpuclustering"

    def __init__(self, tags_of: TagsOf | None = None) -> None:
        self._tags_of: TagsOf = tags_of or inferred_tags

    def score(self, free: NodeFree, request: TaskRequest, ctx: ScoreContext) -> tuple[float, tuple[int, ...]] | None:
        if not feasible(free, request):
            return None
        s = gpuclustering_score(free.gpu_free_milli, self._tags_of(free), request)
        return float(s), best_fit_devices(free.device_free, request)


@register_scorer("gpuclustering")
def _factory() -> GpuClusteringScorer:
    return GpuClusteringScorer()
