"""Random: every feasible node equally likely (the published 'Random' baseline).

A scorer sees one node at a time, so the draw is a hash of (seed, node name): the node with the
highest hash wins, which is a uniform choice among feasible nodes. Callers vary ``ctx.seed`` per
decision so that successive tasks do not all land on the same node.
"""

from __future__ import annotations

import hashlib

from modelplane.core.placement import NodeFree
from modelplane.core.workload import TaskRequest
from modelplane.scheduler.scores._common import best_fit_devices, feasible, is_share
from modelplane.scheduler.scoring import ScoreContext, register_scorer


class RandomScorer:
    name = "random"

    def score(self, free: NodeFree, request: TaskRequest, ctx: ScoreContext) -> tuple[float, tuple[int, ...]] | None:
        if not feasible(free, request):
            return None
        digest = hashlib.blake2b(f"{ctx.seed}/{free.node.name}".encode(), digest_size=8).digest()
        draw = int.from_bytes(digest, "big")
        if is_share(request):  # the published baseline also picks the device at random
            fitting = [i for i, f in enumerate(free.device_free) if f >= request.gpu_milli]
            return draw / 2**64, (fitting[draw % len(fitting)],)
        return draw / 2**64, best_fit_devices(free.device_free, request)


@register_scorer("random")
def _factory() -> RandomScorer:
    return RandomScorer()
