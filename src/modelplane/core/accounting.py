"""Quota accounting: how much of each accelerator model a queue uses, borrows and lends.

Shared by the API (``get queues``) and anything that reports usage; the scheduler's admission keeps
its own incremental version of the same arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from modelplane.core.node import Node
from modelplane.core.placement import Placement
from modelplane.core.queue import ANY_MODEL, QueueSpec


@dataclass
class QueueUsage:
    name: str
    quota: dict[str, int] = field(default_factory=dict)  # milli per model
    used: dict[str, int] = field(default_factory=dict)
    borrowed: dict[str, int] = field(default_factory=dict)
    lent: dict[str, int] = field(default_factory=dict)
    cpu_milli: int = 0
    memory_mib: int = 0


def queue_usage(queues: Mapping[str, QueueSpec], active: Iterable[tuple[str, Placement]],
                nodes: Mapping[str, Node]) -> dict[str, QueueUsage]:
    """Usage per queue from the placements of active jobs ``(queue name, placement)``."""
    out = {name: QueueUsage(name, quota=spec.quota_milli()) for name, spec in queues.items()}
    for qname, placement in active:
        u = out.get(qname)
        if u is None:
            continue
        for a in placement.assignments:
            u.cpu_milli += a.cpu_milli
            u.memory_mib += a.memory_mib
            node = nodes.get(a.node)
            if a.devices and node is not None and node.gpu_model:
                model = node.gpu_model
                u.used[model] = u.used.get(model, 0) + a.gpu_milli * len(a.devices)
    for u in out.values():
        for model, used in u.used.items():
            nominal = u.quota.get(model, u.quota.get(ANY_MODEL, 0))
            if used > nominal:
                u.borrowed[model] = used - nominal
    # Lent: what a cohort's borrowers take beyond their quota comes from idle quota of the others.
    cohorts: dict[str, list[str]] = {}
    for name, spec in queues.items():
        if spec.cohort:
            cohorts.setdefault(spec.cohort, []).append(name)
    for members in cohorts.values():
        models = {m for n in members for m in out[n].borrowed}
        for model in models:
            demand = sum(out[n].borrowed.get(model, 0) for n in members)
            for n in members:
                if demand <= 0:
                    break
                idle = max(0, out[n].quota.get(model, 0) - out[n].used.get(model, 0))
                take = min(idle, demand)
                if take:
                    out[n].lent[model] = take
                    demand -= take
    return out
