"""FGD+: FGD's integer score with ties broken towards the node left with the least free GPU.

FGD (``scores.fgd``) rounds its score to Kubernetes' 0-100 integers, so many nodes tie; the
reference then takes the first node of a fixed order, which packs equal-score nodes one after
another. FGD+ keeps the integer score (replays showed that finer scores lose: the ties and the
packing they cause are part of why FGD works) and, among tied nodes, prefers the one left with the
least free GPU share, before the fixed order: packing on purpose rather than by the accident of
names. Devices are chosen as FGD chooses them. Free CPU is deliberately not part of the tie-break:
BestFit's CPU+GPU measure packed CPU too and stranded GPU shares on CPU-exhausted nodes (replays
on seeds 52-53: -0.2 points on gpushare100 against +0.35 for GPU alone).

Replays that split the tie-break by task kind (seeds 42-46) showed that its gain on the gpuspec
lists comes entirely from CPU-only tasks, and that on GPU tasks it loses (up to -3 points on
gpushare100 for shares, -2.5 on cpu250 for whole devices): ``fgd_cpu_pack`` keeps only the
CPU-only part.

The score is ``FGD integer + tie / 2`` with ``tie = 1 - GPU left / 8 GPUs`` clipped to [0, 1], so it
never reorders two different FGD integers.
"""

from __future__ import annotations

from modelplane.core.placement import NodeFree
from modelplane.core.workload import TaskRequest
from modelplane.scheduler.scores._common import MAX_SPEC_GPU_MILLI
from modelplane.scheduler.scores.fgd import FGDScorer
from modelplane.scheduler.scoring import ScoreContext, register_scorer

TIE_SCALE = 0.5  # the tie-break term stays below one integer step of the FGD score


def packing_tie(gpu_free_total: int, request: TaskRequest) -> float:
    """In [0, TIE_SCALE]: higher when the node is left with less free GPU (same arithmetic as the replay)."""
    left = (gpu_free_total - request.total_gpu_milli) / MAX_SPEC_GPU_MILLI
    return min(max(1.0 - left, 0.0), 1.0) * TIE_SCALE


class FGDPlusScorer:
    name = "fgd_plus"
    _fgd = FGDScorer()  # stateless: FGD's integer score and its devices

    def tie_broken(self, request: TaskRequest) -> bool:
        """Whether this request's FGD ties are broken towards fuller nodes (every request here)."""
        return True

    def score(self, free: NodeFree, request: TaskRequest, ctx: ScoreContext) -> tuple[float, tuple[int, ...]] | None:
        scored = self._fgd.score(free, request, ctx)
        if scored is None or not self.tie_broken(request):
            return scored
        return scored[0] + packing_tie(free.gpu_free_milli, request), scored[1]


@register_scorer("fgd_plus")
def _factory() -> FGDPlusScorer:
    return FGDPlusScorer()
