"""Node-group autoscaling, ASG-like: provision with delay, scale down after idle, spot with notices.

The policy sees the nodes the controller observes and the GPUs the deployments need, and answers
actions: provision N nodes in a group, drain a node, terminate a node. It never waits for anything;
the controller (live) or the replay (simulated) carries the actions out and reports back.

Spot handling: a node that received an interruption notice (AWS gives 2 min, GCP and Azure 30 s)
is drained at once and its capacity is provisioned again elsewhere before it dies, so replicas
move while the old node still serves. Where spot nodes keep being interrupted, new capacity goes to
on-demand for ``spot_backoff_s``.
Anchors: Cluster Autoscaler scale-down after 10 min unneeded; GPU nodes take minutes to provision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True)
class NodeGroup:
    name: str
    gpus_per_node: int
    price_per_hour: float
    spot: bool = False
    provisioning_delay_s: float = 180.0
    min_nodes: int = 0
    max_nodes: int = 1000
    notice_s: float = 120.0  # spot interruption notice: 120 on AWS, 30 on GCP/Azure

    def __post_init__(self) -> None:
        if self.gpus_per_node < 1 or self.price_per_hour < 0 or self.min_nodes > self.max_nodes:
            raise ValueError(f"node group {self.name}: gpus_per_node >= 1, price >= 0, min_nodes <= max_nodes")


class NodePhase(StrEnum):
    PROVISIONING = "provisioning"
    READY = "ready"
    DRAINING = "draining"


@dataclass(frozen=True)
class NodeView:
    """One node as observed: ``used_gpus`` by replicas on it; ``interruption_at`` set by a spot notice."""

    id: str
    group: str
    phase: NodePhase
    used_gpus: int = 0
    interruption_at: float | None = None


@dataclass(frozen=True)
class Provision:
    group: str
    count: int


@dataclass(frozen=True)
class Drain:
    node_id: str
    reason: str


@dataclass(frozen=True)
class Terminate:
    node_id: str
    reason: str


NodeAction = Provision | Drain | Terminate


@dataclass
class NodeGroupAutoscaler:
    """Keeps usable GPUs >= needed GPUs, with a spot share, and releases nodes idle for long enough."""

    groups: list[NodeGroup]
    scale_down_idle_s: float = 600.0
    spot_fraction: float = 0.0
    spot_backoff_s: float = 900.0
    _idle_since: dict[str, float] = field(default_factory=dict)
    _last_interruption: float = -math.inf

    def __post_init__(self) -> None:
        if not self.groups:
            raise ValueError("at least one node group is needed")
        if not 0.0 <= self.spot_fraction <= 1.0:
            raise ValueError("spot_fraction must be within [0, 1]")
        self._by_name = {g.name: g for g in self.groups}

    def plan(self, now: float, nodes: list[NodeView], gpus_needed: int) -> list[NodeAction]:
        actions: list[NodeAction] = []
        usable: list[NodeView] = []
        for n in nodes:
            if n.interruption_at is not None and n.phase is not NodePhase.DRAINING:
                actions.append(Drain(n.id, f"spot interruption at {n.interruption_at:.0f}"))
                self._last_interruption = now
            elif n.phase is NodePhase.DRAINING:
                if n.used_gpus == 0:
                    actions.append(Terminate(n.id, "drained"))
            else:
                usable.append(n)
        have = sum(self._by_name[n.group].gpus_per_node for n in usable)
        if gpus_needed > have:
            actions.extend(self._provision(now, usable, gpus_needed - have))
        else:
            actions.extend(self._release_idle(now, usable, have - gpus_needed))
        live = {n.id for n in usable}
        self._idle_since = {k: v for k, v in self._idle_since.items() if k in live}
        return actions

    def _provision(self, now: float, usable: list[NodeView], missing: int) -> list[NodeAction]:
        counts = {g.name: 0 for g in self.groups}
        for n in usable:
            counts[n.group] += 1
        spot_ok = now - self._last_interruption >= self.spot_backoff_s
        total_after = sum(self._by_name[n.group].gpus_per_node for n in usable) + missing
        spot_have = sum(self._by_name[n.group].gpus_per_node for n in usable if self._by_name[n.group].spot)
        spot_want = max(0, math.floor(total_after * self.spot_fraction) - spot_have) if spot_ok else 0
        out: list[NodeAction] = []
        # Spot up to its share, then on-demand, then spot again when on-demand cannot cover the rest.
        for i, spot_pass in enumerate((True, False, True)):
            budget = min(missing, spot_want) if i == 0 else missing
            for g in sorted((g for g in self.groups if g.spot == spot_pass), key=lambda g: g.price_per_hour / g.gpus_per_node):
                if budget <= 0:
                    break
                add = min(math.ceil(budget / g.gpus_per_node), g.max_nodes - counts[g.name])
                if add > 0:
                    out.append(Provision(g.name, add))
                    counts[g.name] += add
                    budget -= add * g.gpus_per_node
                    missing -= add * g.gpus_per_node
            if missing <= 0:
                break
        return out

    def _release_idle(self, now: float, usable: list[NodeView], spare_gpus: int) -> list[NodeAction]:
        counts = {g.name: 0 for g in self.groups}
        for n in usable:
            counts[n.group] += 1
        out: list[NodeAction] = []
        idle = []
        for n in usable:
            if n.phase is NodePhase.READY and n.used_gpus == 0:
                since = self._idle_since.setdefault(n.id, now)
                if now - since >= self.scale_down_idle_s:
                    idle.append(n)
            else:
                self._idle_since.pop(n.id, None)
        # Most expensive per GPU first: on-demand goes before spot.
        for n in sorted(idle, key=lambda n: (-self._by_name[n.group].price_per_hour / self._by_name[n.group].gpus_per_node, n.id)):
            g = self._by_name[n.group]
            if spare_gpus >= g.gpus_per_node and counts[g.name] > g.min_nodes:
                out.append(Terminate(n.id, f"idle {now - self._idle_since[n.id]:.0f} s"))
                spare_gpus -= g.gpus_per_node
                counts[g.name] -= 1
        return out
