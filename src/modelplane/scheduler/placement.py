"""Placement: filter, then score, one task at a time, a whole workload or nothing.

For each task the framework gathers up to ``max_candidates`` feasible nodes from the pool's
indexes (tightest free first, as kube-scheduler scores only a share of the nodes of a large
cluster), then ranks them by, in order:

1. preferred node affinity (sum of matching terms' weights) minus untolerated PreferNoSchedule
   taints: the user's stated wishes come first;
2. topology: for a gang, nodes and switches its ranks already use (fewer nodes, no cross-switch
   links); for a workload with ``spread=True`` (inference replicas), switches and nodes it does
   *not* use yet (separate failure domains);
3. the node scorer chosen by name (FGD, best fit, ...; see ``scoring.py``), which also picks the
   devices.

A gang of several ranks is first tried inside one switch (the fullest switch that can hold it, so
empty switches stay whole for larger gangs), then inside one group, then anywhere with locality
preferred. Every attempt is tentative: on failure its tasks are given back, so a round never leaves
a half-placed gang behind and nothing is held between rounds.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from modelplane.core.affinity import TaintEffect
from modelplane.core.placement import NodeFree, Placement, TaskAssignment
from modelplane.core.workload import PodSet, TaskRequest, Workload
from modelplane.scheduler.filters import Eligibility, Eligible
from modelplane.scheduler.pool import WHOLE, Pool
from modelplane.scheduler.scoring import NodeScorer, ScoreContext


class LeastFreeScorer:
    """The built-in scorer: best fit on accelerators, then CPU (least left free is best).

    Used when no scorer is named; the published scorers (FGD and the others) live in
    ``scheduler/scores`` and are chosen by name.
    """

    name = "least-free"

    def score(self, free: NodeFree, request: TaskRequest, ctx: ScoreContext) -> tuple[float, tuple[int, ...]] | None:
        devices = free.pick_devices(request)
        if devices is None or request.cpu_milli > free.cpu_milli or request.memory_mib > free.memory_mib:
            return None
        gpu_left = free.gpu_free_milli - request.gpu_milli * len(devices)
        cpu_left = free.cpu_milli - request.cpu_milli
        return -(gpu_left * 1_000_000 + cpu_left) / 1e9, devices


# Scorers whose answer depends only on a node's free capacity, model and size, never on its name:
# their scores are memoised per round by node state, since many nodes of a pool are in the same state.
STATE_ONLY_SCORERS = frozenset(
    {"least-free", "bestfit", "dotprod", "gpupacking", "gpuclustering", "fgd", "fgd-fine", "fgd_cpu_pack",
     "fgd_cpu_aware", "fgd_cpu_excess", "fgd_fit_excess"})


@dataclass(frozen=True)
class PlacementOptions:
    max_candidates: int | None = 16  # feasible nodes scored per task; None scores every feasible node
    topology: bool = True  # gangs: one switch, else one group, else fewest switches
    spread: bool = True  # spread=True workloads: separate switches and nodes
    domain_tries: int = 8  # switches (then groups) tried per gang before going pool-wide


def whole_demand(w: Workload) -> int:
    """Whole devices a workload needs (fractional shares not counted)."""
    return sum(ps.count * ps.request.gpu_count for ps in w.pod_sets if ps.request.gpu_milli >= WHOLE)


class Placer:
    """Places workloads on a ``Pool``; see the module docstring for the ranking."""

    def __init__(
        self,
        pool: Pool,
        eligibility: Eligibility,
        scorer: NodeScorer | None = None,
        ctx: ScoreContext | None = None,
        options: PlacementOptions | None = None,
    ) -> None:
        self.pool = pool
        self.eligibility = eligibility
        self.scorer: NodeScorer = scorer or LeastFreeScorer()
        self.ctx = ctx or ScoreContext()
        self.options = options or PlacementOptions()
        self._k = self.options.max_candidates or len(pool.nodes) or 1
        self._decisions = 0
        self._memo: dict[tuple[object, ...], tuple[float, tuple[int, ...]] | None] | None = (
            {} if self.scorer.name in STATE_ONLY_SCORERS else None)

    def score(self, i: int, req: TaskRequest) -> tuple[float, tuple[int, ...]] | None:
        """The scorer's (score, devices) for a task on node ``i`` as the pool stands now."""
        free = self.pool.free[i]
        if self._memo is None:
            # Scorers that draw at random get a fresh seed per decision, so that successive tasks
            # do not all prefer the same node.
            return self.scorer.score(free, req, replace(self.ctx, seed=self.ctx.seed + self._decisions))
        node = free.node
        key = (node.gpu_model, node.gpu_count, node.cpu_milli, node.memory_mib, tuple(free.device_free),
               free.cpu_milli, free.memory_mib, req)
        if key in self._memo:
            return self._memo[key]
        out = self.scorer.score(free, req, self.ctx)
        self._memo[key] = out
        return out

    # -- workloads ---------------------------------------------------------------------------------

    def place(self, w: Workload, models: Collection[str] | None = None,
              exclude: Collection[int] | None = None) -> Placement | None:
        """Place every task of ``w`` on the pool (taken from it) or none (pool unchanged).

        ``models`` limits accelerator models (those the queue's quota admits); ``exclude`` names
        node indices not to use (a backfill reservation's nodes).
        """
        allowed = list(self.pool.models) if models is None else [m for m in self.pool.models if m in models]
        need = whole_demand(w)
        if w.gang and w.task_count > 1 and need > 0 and self.options.topology:
            gang_models = self._gang_models(w, allowed)
            for level in ("switch", "group"):
                for nodes in self._domains(level, w, gang_models, need):
                    p = self._place_tasks(w, allowed, exclude, restrict=nodes, locality=True)
                    if p is not None:
                        return p
            return self._place_tasks(w, allowed, exclude, restrict=None, locality=True)
        return self._place_tasks(w, allowed, exclude, restrict=None, locality=w.gang and w.task_count > 1)

    def _gang_models(self, w: Workload, allowed: Sequence[str]) -> list[str]:
        models: set[str] = set()
        for ps in w.pod_sets:
            wanted = ps.request.gpu_models
            models.update(m for m in allowed if not wanted or m in wanted)
        return sorted(models)

    def _domains(self, level: str, w: Workload, models: Sequence[str], need: int) -> list[list[int]]:
        """Switches (or groups) that can hold the whole gang, fullest first.

        Per-domain histograms of free whole devices rule most domains out without visiting a node;
        the fullest remaining ones (at most ``4 x domain_tries``) are then checked node by node
        (eligibility, CPU, memory) until ``domain_tries`` qualify, so a gang rarely attempts a
        placement that is bound to fail.
        """
        pool = self.pool
        aggregates = pool.switch_whole if level == "switch" else pool.group_whole
        hists = pool.switch_hist if level == "switch" else pool.group_hist
        members = pool.switch_nodes if level == "switch" else pool.group_nodes
        if len(members) <= 1 and level == "group":
            return []
        whole_sets = [ps for ps in w.pod_sets if ps.request.gpu_count and ps.request.gpu_milli >= WHOLE]
        keys = [(m, False) for m in models]
        if any(ps.tolerations for ps in w.pod_sets):
            keys += [(m, True) for m in models]
        fits = []
        for d, agg in enumerate(aggregates):
            total = sum(agg.get(k, 0) for k in keys)
            if total < need:
                continue
            if all(pool.tasks_that_fit(hists[d], keys, ps.request.gpu_count) >= ps.count for ps in whole_sets):
                fits.append((total, d))
        fits.sort()
        out: list[list[int]] = []
        for _, d in fits[: 4 * self.options.domain_tries]:  # bounded work per gang
            if all(self._room_in(members[d], ps, models, ps.count) >= ps.count for ps in whole_sets):
                out.append(members[d])
                if len(out) >= self.options.domain_tries:
                    break
        return out

    def _room_in(self, nodes: Sequence[int], ps: PodSet, models: Sequence[str], enough: int) -> int:
        """How many tasks of the pod set the given nodes could take now (counting stops at ``enough``)."""
        pool = self.pool
        req = ps.request
        el = self.eligibility.of(ps).members
        room = 0
        model_of, free, g = pool.model_of, pool.free, req.gpu_count
        cpu, mem = req.cpu_milli, req.memory_mib
        for i in nodes:
            if i not in el or model_of[i] not in models:
                continue
            n = pool.whole_free(i) // g
            if n and cpu:
                n = min(n, free[i].cpu_milli // cpu)
            if n and mem:
                n = min(n, free[i].memory_mib // mem)
            room += n
            if room >= enough:
                break
        return room

    def _place_tasks(self, w: Workload, models: Sequence[str], exclude: Collection[int] | None,
                     restrict: Sequence[int] | None, locality: bool) -> Placement | None:
        taken: list[TaskAssignment] = []
        used_nodes: dict[int, int] = {}
        used_switches: dict[int, int] = {}
        used_groups: dict[int, int] = {}
        spread = w.spread and self.options.spread and w.task_count > 1
        rank = 0
        for ps in w.pod_sets:
            el = self.eligibility.of(ps)
            for index in range(ps.count):
                near = None
                if locality and used_switches and restrict is None:
                    near = [j for s in sorted(used_switches) for j in self.pool.switch_nodes[s]]
                pick = self._best_node(ps, el, models, exclude, restrict, near,
                                       used_nodes, used_switches, used_groups, locality, spread)
                if pick is None:
                    for a in reversed(taken):
                        self.pool.give_back(a)
                    return None
                i, devices = pick
                a = TaskAssignment(
                    pod_set=ps.name, index=index, rank=rank, node=self.pool.nodes[i].name,
                    cpu_milli=ps.request.cpu_milli, memory_mib=ps.request.memory_mib,
                    devices=devices, gpu_milli=ps.request.gpu_milli if devices else 0,
                )
                self.pool.take(a)
                taken.append(a)
                used_nodes[i] = used_nodes.get(i, 0) + 1
                s, g = self.pool.switch_of[i], self.pool.group_of[i]
                used_switches[s] = used_switches.get(s, 0) + 1
                used_groups[g] = used_groups.get(g, 0) + 1
                rank += 1
        return Placement(w.job_id, tuple(taken))

    # -- one task ----------------------------------------------------------------------------------

    def _best_node(self, ps: PodSet, el: Eligible, models: Sequence[str], exclude: Collection[int] | None,
                   restrict: Sequence[int] | None, near: Sequence[int] | None,
                   used_nodes: dict[int, int], used_switches: dict[int, int], used_groups: dict[int, int],
                   locality: bool, spread: bool) -> tuple[int, tuple[int, ...]] | None:
        self._decisions += 1
        avoid = set(used_switches) if spread else None
        cands = self.candidates(ps, el, models, exclude, restrict, avoid)
        if near is not None:
            extra = self.candidates(ps, el, models, exclude, near, None)
            cands = list(dict.fromkeys([*extra, *cands]))
        best: tuple[tuple[float, float, float], int, tuple[int, ...]] | None = None
        req = ps.request
        aff = ps.affinity if ps.affinity is not None and ps.affinity.preferred else None
        for i in cands:
            node = self.pool.nodes[i]
            scored = self.score(i, req)
            if scored is None:
                continue
            wish = float(aff.preferred_score(node.name, node.labels)) if aff is not None else 0.0
            if node.taints:
                wish -= sum(1 for t in node.taints if t.effect == TaintEffect.PREFER_NO_SCHEDULE
                            and not any(tol.tolerates(t) for tol in ps.tolerations))
            s, g = self.pool.switch_of[i], self.pool.group_of[i]
            topo = 0.0
            if locality:
                topo = 2.0 * (i in used_nodes) + (s in used_switches) + 0.5 * (g in used_groups)
            elif spread:
                topo = -(used_switches.get(s, 0) * 1.0 + used_nodes.get(i, 0) * 0.5)
            key = (wish, topo, scored[0])
            if best is None or key > best[0]:
                best = (key, i, tuple(scored[1]))
        if best is None:
            return None
        return best[1], best[2]

    def candidates(self, ps: PodSet, el: Eligible, models: Sequence[str], exclude: Collection[int] | None,
                   restrict: Sequence[int] | None, avoid: set[int] | None = None) -> list[int]:
        """Up to ``max_candidates`` eligible nodes the task fits on now, tightest free first.

        With ``avoid`` (switches), nodes under those switches are only returned when no other fits.
        """
        req = ps.request
        pool = self.pool
        k = self._k
        out: list[int] = []
        fallback: list[int] = []
        model_ok = set(models)
        members = el.members

        def consider(i: int) -> bool:
            if exclude and i in exclude:
                return False
            if req.wants_gpu and pool.model_of[i] not in model_ok:
                return False
            if not pool.fits(i, req):
                return False
            if avoid and pool.switch_of[i] in avoid:
                if len(fallback) < k:
                    fallback.append(i)
                return False
            out.append(i)
            return len(out) >= k

        if restrict is not None:
            for i in restrict:
                if i in members and consider(i):
                    break
        elif not req.wants_gpu or len(el.indices) <= 4 * k:
            order = el.indices
            if not req.wants_gpu:
                if el.cpu_first is None:
                    el.cpu_first = sorted(el.indices, key=lambda j: pool.model_of[j] is not None)
                order = el.cpu_first
            for i in order:
                if consider(i):
                    break
        else:
            wanted = [m for m in models if not req.gpu_models or m in req.gpu_models]
            done = False
            if req.gpu_milli < WHOLE:
                for m in wanted:
                    for i in pool.partial_candidates(m, req.gpu_milli):
                        if i in members and consider(i):
                            done = True
                            break
                    if done:
                        break
            start = req.gpu_count if req.gpu_milli >= WHOLE else 1
            for count in range(start, pool.max_devices + 1):
                if done:
                    break
                for m in wanted:
                    for i in pool.by_whole[m][count]:
                        if i in members and consider(i):
                            done = True
                            break
                    if done:
                        break
        return out or fallback
