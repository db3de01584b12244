"""What the pool cost, and who used it: GPU-hours and money per job, team and queue.

A task pays its node's hourly price in proportion to the share of the node it holds (its devices on an
accelerator node, its CPU on a CPU node) for as long as its job held the placement; what the running
jobs do not pay is the pool's idle cost. Pure: the window and the records are arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from modelplane.core.node import Node
from modelplane.core.placement import Placement


@dataclass(frozen=True)
class JobUsage:
    """One job's placement and the interval it held it (``end`` None: still running)."""

    job_id: str
    name: str
    team: str
    queue: str
    placement: Placement
    start: float
    end: float | None


@dataclass
class CostLine:
    gpu_hours: float = 0.0
    cost: float = 0.0
    spot_cost: float = 0.0

    def add(self, gpu_hours: float, cost: float, spot: bool) -> None:
        self.gpu_hours += gpu_hours
        self.cost += cost
        if spot:
            self.spot_cost += cost


@dataclass
class CostReport:
    since: float
    until: float
    by_job: dict[str, CostLine] = field(default_factory=dict)
    by_team: dict[str, CostLine] = field(default_factory=dict)
    by_queue: dict[str, CostLine] = field(default_factory=dict)
    pool_cost: float = 0.0
    used_cost: float = 0.0

    @property
    def idle_cost(self) -> float:
        return max(0.0, self.pool_cost - self.used_cost)


def _share(node: Node, devices: int, gpu_milli: int, cpu_milli: int) -> tuple[float, float]:
    """(fraction of the node's price, GPUs held) for one task."""
    if node.gpu_count:
        gpus = devices * gpu_milli / 1000
        return gpus / node.gpu_count, gpus
    return (cpu_milli / node.cpu_milli if node.cpu_milli else 0.0), 0.0


def cost_report(usages: Iterable[JobUsage], nodes: Mapping[str, Node], since: float, until: float) -> CostReport:
    report = CostReport(since, until)
    report.pool_cost = sum(n.price_per_hour for n in nodes.values()) * max(0.0, until - since) / 3600
    for u in usages:
        start, end = max(u.start, since), min(u.end if u.end is not None else until, until)
        if end <= start:
            continue
        hours = (end - start) / 3600
        line = CostLine()
        for a in u.placement.assignments:
            node = nodes.get(a.node)
            if node is None:
                continue
            frac, gpus = _share(node, len(a.devices), a.gpu_milli, a.cpu_milli)
            line.add(gpus * hours, frac * node.price_per_hour * hours, node.spot)
        report.by_job[u.name] = line
        for key, table in ((u.team, report.by_team), (u.queue, report.by_queue)):
            agg = table.setdefault(key, CostLine())
            agg.gpu_hours += line.gpu_hours
            agg.cost += line.cost
            agg.spot_cost += line.spot_cost
        report.used_cost += line.cost
    return report
