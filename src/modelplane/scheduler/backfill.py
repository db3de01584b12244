"""EASY backfill: the blocked head of the line gets a reservation; others may only use the rest.

When the first workload in scheduling order cannot be placed for lack of free resources, the
scheduler computes its *reservation*: releasing running workloads in order of their estimated end
(``started_at + estimated_duration_s``; unknown estimates never end), the earliest time at which
the head would fit, and the nodes it would then use. A later workload may start now only if

* it does not touch the reserved nodes, or
* it has a runtime estimate and ends before the reservation starts,

so it can never delay the head (EASY, Lifka 1995; the rule Slurm's backfill uses). With several
reservations (the starving workloads', below), "the reservation" is the earliest of them, unless
the policy's ``backfill_each_reservation`` checks each on its own nodes: work that ends before one
reservation starts may then use that one's nodes while it avoids those of reservations starting
sooner (``Reservations.nodes_starting_before``). With the
policy's ``reservation_spare`` (off by default, see ``PolicyOptions``), a reservation holds only
what its workload will use: a reserved node's *spare* (the whole devices, CPU and memory it has left
at the reservation's start once the workload is on it, by the running workloads' estimates) may be
used by a workload that runs past the start, as EASY counts processors rather than nodes
(``Reservations.hold``); held whole, a node reserved for a 1-GPU job keeps up to 7 GPUs idle from
work that would never delay it. A reservation for a workload that waits on its
cohort's quota rather than on room is the exception (``spare`` empty, held whole): what would be
spare there is the quota it waits for, and lent out it is never free when the start comes. One such
reservation is made per round, as in EASY; the head is placed as soon as its resources are free.
Workloads past the policy's starvation threshold each get a reservation of their own as well, on
nodes no other reservation holds (conservative backfill for them), so that a large job passed
over again and again gets a guaranteed start time.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from modelplane.core.placement import Placement, TaskAssignment
from modelplane.core.workload import Workload
from modelplane.scheduler.placement import Placer, whole_demand
from modelplane.scheduler.pool import WHOLE, Pool

MAX_TRIES = 24  # full placement attempts while searching the reservation time


@dataclass(frozen=True)
class Reservation:
    job_id: str
    name: str
    start: float  # math.inf when the head waits on workloads without a runtime estimate
    nodes: frozenset[int]
    # Per reserved node: (whole devices, CPU milli, memory MiB) left at ``start`` once the reserved
    # workload is on it; what a workload running past ``start`` may still use there.
    spare: Mapping[int, tuple[int, int, int]] = field(default_factory=dict)


def estimated_end(started_at: float, estimated_duration_s: float | None) -> float:
    return started_at + estimated_duration_s if estimated_duration_s is not None else math.inf


def reserve(
    placer: Placer,
    head: Workload,
    models: Collection[str] | None,
    holding: Sequence[tuple[float, Placement]],
    exclude: Collection[int] | None = None,
) -> Reservation | None:
    """The head's reservation, or None when it would not fit even on an empty pool.

    ``holding`` lists (estimated end, placement) of everything holding resources; ``exclude`` the
    nodes of earlier reservations (never shared). The pool is left exactly as it was.
    """
    pool = placer.pool
    groups: list[tuple[float, list[Placement]]] = []
    for t, p in sorted(holding, key=lambda e: e[0]):
        if groups and groups[-1][0] == t:
            groups[-1][1].append(p)
        else:
            groups.append((t, [p]))
    allowed = list(pool.models) if models is None else [m for m in pool.models if m in models]
    need = whole_demand(head)
    k = 0  # groups released so far

    def move_to(target: int) -> None:
        nonlocal k
        while k < target:
            for p in groups[k][1]:
                pool.give_back_placement(p)
            k += 1
        while k > target:
            k -= 1
            for p in reversed(groups[k][1]):
                pool.take_placement(p)

    def attempt() -> frozenset[int] | None:
        p = placer.place(head, models, exclude=exclude)
        if p is None:
            return None
        pool.give_back_placement(p)
        return frozenset(pool.index[a.node] for a in p.assignments)

    if not groups:
        return None  # nothing will ever end: the head does not fit (or needs no reservation)
    try:
        # Cheap necessary condition first: enough whole devices free in all.
        move_to(1)
        lo = 1
        if need:
            while lo <= len(groups) and pool.total_whole_free(allowed) < need:
                if lo == len(groups):
                    return None
                move_to(lo + 1)
                lo += 1
        # Room only grows as workloads end, so the earliest fit is found by bisection over the
        # release times: a few placement attempts however many workloads hold the pool.
        move_to(len(groups))
        if attempt() is None:
            return None
        hi = len(groups)  # fits with ``hi`` groups released
        tries = 0
        while lo < hi and tries < MAX_TRIES:
            mid = (lo + hi) // 2
            move_to(mid)
            tries += 1
            if attempt() is not None:
                hi = mid
            else:
                lo = mid + 1
        move_to(hi)
        final = placer.place(head, models, exclude=exclude)
        assert final is not None
        nodes = frozenset(pool.index[a.node] for a in final.assignments)
        spare = {
            i: (pool.free[i].whole_free_devices, pool.free[i].cpu_milli, pool.free[i].memory_mib)
            for i in nodes
        }
        pool.give_back_placement(final)
        return Reservation(head.job_id, head.name, groups[hi - 1][0], nodes, spare)
    finally:
        move_to(0)


class Reservations:
    """The round's reservations: EASY's one for the blocked head, plus one per starving workload.

    A workload may start now only off every reserved node, or, with a runtime estimate, when it
    ends before the earliest reservation starts (``nodes_starting_before``: before each one's).
    """

    def __init__(self) -> None:
        self.items: list[Reservation] = []
        self.nodes: frozenset[int] = frozenset()
        self.spare: dict[int, list[int]] = {}  # node -> [whole devices, CPU, memory] still spare at start

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, r: Reservation | None) -> Reservation | None:
        if r is not None:
            self.items.append(r)
            self.nodes = self.nodes | r.nodes
            for i in r.nodes:
                self.spare[i] = list(r.spare.get(i, (0, 0, 0)))
        return r

    def hold(self, pool: Pool) -> list[TaskAssignment]:
        """Take from ``pool`` what a workload running past the reservations must leave alone.

        On each reserved node that is everything free now beyond its spare: the whole devices over
        the spare count, every partly used device (it may be whole by the start), and the CPU and
        memory over the spare. Undo with ``release``; a workload placed meanwhile can delay no
        reservation, and ``consume`` then charges it to the spare.
        """
        held: list[TaskAssignment] = []
        for i, (devices, cpu, memory) in self.spare.items():
            free = pool.free[i]
            name = pool.nodes[i].name
            whole = [d for d, v in enumerate(free.device_free) if v == WHOLE]
            extra = max(0, len(whole) - max(devices, 0))
            parts = [(d, v) for d, v in enumerate(free.device_free) if 0 < v < WHOLE]
            a = TaskAssignment(
                "reserved",
                0,
                0,
                name,
                max(0, free.cpu_milli - max(cpu, 0)),
                max(0, free.memory_mib - max(memory, 0)),
                tuple(whole[len(whole) - extra :]),
                WHOLE,
            )
            pool.take(a)
            held.append(a)
            for d, v in parts:
                b = TaskAssignment("reserved", 0, 0, name, 0, 0, (d,), v)
                pool.take(b)
                held.append(b)
        return held

    @staticmethod
    def release(pool: Pool, held: Sequence[TaskAssignment]) -> None:
        for a in reversed(held):
            pool.give_back(a)

    def consume(self, placement: Placement, pool: Pool) -> None:
        """Charge a workload that runs past the reservations to the spare of the reserved nodes it uses."""
        for a in placement.assignments:
            i = pool.index.get(a.node)
            if i is not None and i in self.spare:
                s = self.spare[i]
                s[0] -= len(a.devices)
                s[1] -= a.cpu_milli
                s[2] -= a.memory_mib

    def nodes_starting_before(self, end: float) -> frozenset[int]:
        """Nodes of the reservations starting before ``end`` (all for an endless or unestimated workload).

        Each reservation is checked on its own (as conservative backfill does): work that ends
        before a reservation starts may use that reservation's nodes even when another, earlier
        reservation elsewhere would be delayed by it on its own nodes.
        """
        out: frozenset[int] = frozenset()
        for r in self.items:
            if r.start < end or math.isinf(end):  # no estimate: it may delay every reservation
                out = out | r.nodes
        return out

    @property
    def first(self) -> Reservation:
        return self.items[0]

    @property
    def start(self) -> float:
        return min(r.start for r in self.items)

    def of(self, job_id: str) -> Reservation | None:
        return next((r for r in self.items if r.job_id == job_id), None)
