"""EASY backfill: the blocked head of the line gets a reservation; others may only use the rest.

When the first workload in scheduling order cannot be placed for lack of free resources, the
scheduler computes its *reservation*: releasing running workloads in order of their estimated end
(``started_at + estimated_duration_s``; unknown estimates never end), the earliest time at which
the head would fit, and the nodes it would then use. A later workload may start now only if

* it does not touch the reserved nodes, or
* it has a runtime estimate and ends before the reservation starts,

so it can never delay the head (EASY, Lifka 1995; the rule Slurm's backfill uses). Only one
reservation is made per round, as in EASY; the head is placed as soon as its resources are free.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from modelplane.core.placement import Placement
from modelplane.core.workload import Workload
from modelplane.scheduler.placement import Placer, whole_demand

MAX_TRIES = 24  # full placement attempts while searching the reservation time


@dataclass(frozen=True)
class Reservation:
    job_id: str
    name: str
    start: float  # math.inf when the head waits on workloads without a runtime estimate
    nodes: frozenset[int]


def estimated_end(started_at: float, estimated_duration_s: float | None) -> float:
    return started_at + estimated_duration_s if estimated_duration_s is not None else math.inf


def reserve(placer: Placer, head: Workload, models: Collection[str] | None,
            holding: Sequence[tuple[float, Placement]]) -> Reservation | None:
    """The head's reservation, or None when it would not fit even on an empty pool.

    ``holding`` lists (estimated end, placement) of everything holding resources. The pool is left
    exactly as it was.
    """
    pool = placer.pool
    releases = sorted(holding, key=lambda e: e[0])
    allowed = list(pool.models) if models is None else [m for m in pool.models if m in models]
    need = whole_demand(head)
    released: list[Placement] = []
    found: Reservation | None = None
    tries = 0
    i = 0
    try:
        while i < len(releases):
            t = releases[i][0]
            while i < len(releases) and releases[i][0] == t:
                pool.give_back_placement(releases[i][1])
                released.append(releases[i][1])
                i += 1
            if need and pool.total_whole_free(allowed) < need:
                continue
            # Past MAX_TRIES, only try again at the last release: bounded work per round.
            if tries >= MAX_TRIES and i < len(releases):
                continue
            tries += 1
            p = placer.place(head, models)
            if p is not None:
                pool.give_back_placement(p)
                found = Reservation(head.job_id, head.name, t, frozenset(pool.index[a.node] for a in p.assignments))
                break
    finally:
        for p in reversed(released):
            pool.take_placement(p)
    return found
