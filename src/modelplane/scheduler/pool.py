"""The pool's free capacity during one scheduling round, indexed so that a placement is cheap.

A round makes thousands of tentative placements; scanning every node for each task would make the
cost of a placement grow linearly with the pool. Instead, schedulable nodes are kept in buckets:

* per accelerator model, by the number of *whole* free devices (0..devices per node), so a request
  for ``g`` whole devices looks only at buckets ``g`` and up, tightest first (best fit for free);
* per accelerator model, by the largest *partly used* device's free share (in tenths), so a
  fractional request is packed onto devices already shared before a whole device is broken;
* per switch and per group, the sum of whole free devices per model, so a gang can skip, without
  looking at their nodes, the switches that cannot hold it.

Every change goes through ``take``/``give_back`` (exact inverses), so a tentative placement,
a backfill reservation or a preemption "what if" is undone by replaying its changes backwards,
never by copying the pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from modelplane.core.affinity import TaintEffect
from modelplane.core.node import Node
from modelplane.core.placement import NodeFree, Placement, TaskAssignment
from modelplane.core.workload import TaskRequest

WHOLE = 1000
DomainKey = tuple[str, bool]  # (accelerator model, node has a NoSchedule/NoExecute taint)
PARTIAL_BUCKETS = 10  # largest partial free share // 100


class Pool:
    """Free capacity of every node, with the indexes described in the module docstring."""

    def __init__(self, nodes: Sequence[Node], running: Iterable[Placement] = ()) -> None:
        self.nodes: list[Node] = sorted(nodes, key=lambda n: n.name)
        self.index: dict[str, int] = {n.name: i for i, n in enumerate(self.nodes)}
        self.free: list[NodeFree] = [NodeFree.of(n) for n in self.nodes]
        self.model_of: list[str | None] = [n.gpu_model if n.gpu_count else None for n in self.nodes]
        switch_ids: dict[tuple[str, str], int] = {}
        group_ids: dict[str, int] = {}
        self.switch_of: list[int] = []
        self.group_of: list[int] = []
        for n in self.nodes:
            key = (n.topology.group, n.topology.switch)
            self.switch_of.append(switch_ids.setdefault(key, len(switch_ids)))
            self.group_of.append(group_ids.setdefault(n.topology.group, len(group_ids)))
        self.switch_names: list[str] = [f"{g}/{s}" for (g, s) in switch_ids]
        self.group_names: list[str] = list(group_ids)
        self.switch_nodes: list[list[int]] = [[] for _ in switch_ids]
        self.group_nodes: list[list[int]] = [[] for _ in group_ids]
        for i in range(len(self.nodes)):
            self.switch_nodes[self.switch_of[i]].append(i)
            self.group_nodes[self.group_of[i]].append(i)
        self.max_devices = max((n.gpu_count for n in self.nodes), default=0)
        # Indexes over schedulable nodes only.
        self.models: list[str] = sorted({m for i, m in enumerate(self.model_of) if m and self.nodes[i].schedulable})
        self.by_whole: dict[str, list[set[int]]] = {m: [set() for _ in range(self.max_devices + 1)] for m in self.models}
        self.partial: dict[str, list[set[int]]] = {m: [set() for _ in range(PARTIAL_BUCKETS)] for m in self.models}
        self.cpu_only: list[int] = [i for i, n in enumerate(self.nodes) if n.schedulable and not self.model_of[i]]
        # Per switch (group), keyed by (model, hard-tainted): free whole devices, and how many nodes
        # have c whole free devices (c = 0..max_devices). Tainted nodes are counted apart because
        # they are left idle by most work and would otherwise make a domain look emptier than it is.
        self.hard_tainted: list[bool] = [
            any(t.effect is not TaintEffect.PREFER_NO_SCHEDULE for t in n.taints) for n in self.nodes]
        self.switch_whole: list[dict[DomainKey, int]] = [{} for _ in switch_ids]
        self.group_whole: list[dict[DomainKey, int]] = [{} for _ in group_ids]
        self.switch_hist: list[dict[DomainKey, list[int]]] = [{} for _ in switch_ids]
        self.group_hist: list[dict[DomainKey, list[int]]] = [{} for _ in group_ids]
        self._slot: list[tuple[int, int]] = [(-1, -1)] * len(self.nodes)  # (whole, partial bucket) indexed
        for p in running:
            for a in p.assignments:
                at = self.index.get(a.node)
                if at is not None:
                    self.free[at].take(a)  # raises OverAllocation when the snapshot overlaps
        for i, n in enumerate(self.nodes):
            if n.schedulable and self.model_of[i]:
                self._index_node(i)

    # -- index maintenance -------------------------------------------------------------------------

    def _index_node(self, i: int) -> None:
        model = self.model_of[i]
        if model is None or not self.nodes[i].schedulable:
            return
        old_whole, old_part = self._slot[i]
        free = self.free[i].device_free
        whole = sum(1 for d in free if d == WHOLE)
        part_max = max((d for d in free if 0 < d < WHOLE), default=0)
        part = part_max // 100 if part_max else -1
        if old_whole != whole:
            if old_whole >= 0:
                self.by_whole[model][old_whole].discard(i)
            self.by_whole[model][whole].add(i)
            delta = whole - max(old_whole, 0)
            key = (model, self.hard_tainted[i])
            sw, gr = self.switch_whole[self.switch_of[i]], self.group_whole[self.group_of[i]]
            sw[key] = sw.get(key, 0) + delta
            gr[key] = gr.get(key, 0) + delta
            for hists in (self.switch_hist[self.switch_of[i]], self.group_hist[self.group_of[i]]):
                hist = hists.setdefault(key, [0] * (self.max_devices + 1))
                if old_whole >= 0:
                    hist[old_whole] -= 1
                hist[whole] += 1
        if old_part != part:
            if old_part >= 0:
                self.partial[model][old_part].discard(i)
            if part >= 0:
                self.partial[model][part].add(i)
        self._slot[i] = (whole, part)

    def take(self, a: TaskAssignment) -> None:
        i = self.index[a.node]
        self.free[i].take(a)
        self._index_node(i)

    def give_back(self, a: TaskAssignment) -> None:
        i = self.index[a.node]
        self.free[i].give_back(a)
        self._index_node(i)

    def take_placement(self, p: Placement) -> None:
        for a in p.assignments:
            if a.node in self.index:
                self.take(a)

    def give_back_placement(self, p: Placement) -> None:
        for a in p.assignments:
            if a.node in self.index:
                self.give_back(a)

    # -- queries -----------------------------------------------------------------------------------

    def fits(self, i: int, req: TaskRequest) -> bool:
        """``NodeFree.fits``, answered from the index where it can be."""
        f = self.free[i]
        if req.cpu_milli > f.cpu_milli or req.memory_mib > f.memory_mib:
            return False
        if not req.gpu_count:
            return True
        whole = self._slot[i][0]
        if whole < 0:
            return f.fits(req)
        if req.gpu_milli >= WHOLE:
            return whole >= req.gpu_count
        if req.gpu_count == 1:
            return whole > 0 or max(f.device_free, default=0) >= req.gpu_milli
        return f.fits(req)

    def tasks_that_fit(self, hists: dict[DomainKey, list[int]], keys: Iterable[DomainKey], per_task: int) -> int:
        """How many tasks of ``per_task`` whole devices the nodes behind a histogram could take."""
        total = 0
        for k in keys:
            hist = hists.get(k)
            if hist:
                total += sum(n * (c // per_task) for c, n in enumerate(hist) if c >= per_task)
        return total

    def whole_free(self, i: int) -> int:
        return self._slot[i][0] if self._slot[i][0] >= 0 else self.free[i].whole_free_devices

    def whole_candidates(self, model: str, at_least: int) -> Iterator[int]:
        """Schedulable nodes of a model with at least ``at_least`` whole free devices, tightest first."""
        buckets = self.by_whole.get(model)
        if buckets is None:
            return
        for count in range(max(at_least, 0), len(buckets)):
            yield from buckets[count]  # the caller stops iterating before it changes the pool

    def partial_candidates(self, model: str, milli: int) -> Iterator[int]:
        """Nodes of a model with a partly used device that may hold ``milli``, fullest first."""
        buckets = self.partial.get(model)
        if buckets is None:
            return
        for b in range(min(milli // 100, PARTIAL_BUCKETS - 1), PARTIAL_BUCKETS):
            yield from buckets[b]

    def total_whole_free(self, models: Iterable[str]) -> int:
        return sum(sum(c * len(nodes) for c, nodes in enumerate(self.by_whole.get(m, []))) for m in models)
