"""Why pending: one line per unplaced workload, true of the pool as the round left it.

Examples: "needs 8 x NVIDIA-A100 in one switch (2 tasks); the largest free block under a switch is
6; 2 queued jobs of higher priority ahead", "no node passes the filters for pod set 'worker' (40
nodes fail taints, 10 fail node affinity)".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

from modelplane.core.quantity import format_milli
from modelplane.core.workload import PodSet, TaskRequest, Workload
from modelplane.scheduler.filters import Eligibility, first_failing
from modelplane.scheduler.placement import whole_demand
from modelplane.scheduler.pool import WHOLE, Pool


def describe_request(req: TaskRequest) -> str:
    parts = []
    if req.wants_gpu:
        models = "|".join(req.gpu_models) if req.gpu_models else "accelerator"
        if req.gpu_milli >= WHOLE:
            parts.append(f"{req.gpu_count} x {models}")
        else:
            parts.append(f"{format_milli(req.gpu_milli)} of one {models}")
    parts.append(f"{format_milli(req.cpu_milli)} CPU")
    parts.append(f"{req.memory_mib} MiB")
    return " + ".join(parts)


def filter_failures(ps: PodSet, pool: Pool, eligibility: Eligibility) -> str:
    counts = Counter(first_failing(n, ps, eligibility.filters) for n in pool.nodes)
    counts.pop(None, None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    detail = ", ".join(f"{c} fail {name}" for name, c in ranked)
    wanted = ""
    if ps.request.gpu_models:
        wanted = f"; it accepts {'|'.join(ps.request.gpu_models)}"
    return f"no node passes the filters for pod set {ps.name!r} ({detail or 'the pool has no nodes'}{wanted})"


class Explainer:
    """Builds the one-line reasons, caching the work that depends only on a workload's shape."""

    def __init__(self, pool: Pool, eligibility: Eligibility) -> None:
        self.pool = pool
        self.eligibility = eligibility
        self._filters: dict[int, str | None] = {}

    def _no_node(self, w: Workload) -> str | None:
        for ps in w.pod_sets:
            if not self.eligibility.of(ps).indices:
                return filter_failures(ps, self.pool, self.eligibility)
        return None

    def capacity(self, w: Workload, models: Collection[str] | None, ahead: int, topology: bool) -> str:
        """Why ``w`` found no room, given the models its quota allows and how many wait ahead."""
        no_node = self._no_node(w)
        if no_node is not None:
            return no_node
        tail = f"; {ahead} queued job(s) of higher priority ahead" if ahead else ""
        pool = self.pool
        allowed = set(pool.models) if models is None else set(models)
        need = whole_demand(w)
        if w.gang and w.task_count > 1 and need > 0:
            ps = w.pod_sets[0]
            label = "|".join(ps.request.gpu_models) if ps.request.gpu_models else _label(allowed)
            blocks: Counter[int] = Counter()
            total = 0
            for p in w.pod_sets:
                for i in self.eligibility.of(p).indices:
                    if pool.model_of[i] in allowed:
                        free = pool.whole_free(i)
                        blocks[pool.switch_of[i]] += free
                        total += free
            largest = max(blocks.values(), default=0)
            where = "in one switch" if topology else "at once"
            if total < need:
                return (
                    f"needs {need} x {label} {where} ({w.task_count} tasks); the largest free block under a "
                    f"switch is {largest} and only {total} are free on eligible nodes{tail}"
                )
            return (
                f"needs {need} x {label} {where} ({w.task_count} tasks); the largest free block under a switch "
                f"is {largest}, but no set of eligible nodes fits every task (CPU, memory or devices per node)"
                f"{tail}"
            )
        parts = []
        for ps in w.pod_sets:
            el = self.eligibility.of(ps)
            req = ps.request
            usable = [i for i in el.indices if not req.wants_gpu or pool.model_of[i] in allowed]
            if not req.wants_gpu:
                best = max((pool.free[i].cpu_milli for i in usable), default=0)
                freest = f"the freest has {format_milli(best)} CPU free"
            elif req.gpu_milli < WHOLE:
                share = max((max(pool.free[i].device_free, default=0) for i in usable), default=0)
                freest = f"the largest free share of a device is {format_milli(share)}"
            else:
                best = max((pool.whole_free(i) for i in usable), default=0)
                freest = f"the freest has {best} whole device(s) free"
            parts.append(
                f"{ps.count} x ({describe_request(req)}) on {len(usable)} eligible node(s), {freest}"
            )
        return "no room for " + "; ".join(parts) + tail


def _label(models: Collection[str]) -> str:
    ordered: Sequence[str] = sorted(models)
    if not ordered:
        return "accelerator"
    return "|".join(ordered) if len(ordered) <= 3 else f"accelerator ({len(ordered)} models)"
