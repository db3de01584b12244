"""Where each task of a workload runs, and the free capacity that remains on the pool."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from modelplane.core.node import Node
from modelplane.core.workload import TaskRequest


@dataclass(frozen=True)
class TaskAssignment:
    """One task on one node; ``devices`` are indices of the node's accelerators it uses."""

    pod_set: str
    index: int
    rank: int
    node: str
    cpu_milli: int
    memory_mib: int
    devices: tuple[int, ...] = ()
    gpu_milli: int = 0  # per device

    def to_dict(self) -> dict[str, object]:
        return {
            "pod_set": self.pod_set,
            "index": self.index,
            "rank": self.rank,
            "node": self.node,
            "cpu_milli": self.cpu_milli,
            "memory_mib": self.memory_mib,
            "devices": list(self.devices),
            "gpu_milli": self.gpu_milli,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> TaskAssignment:
        devices = d.get("devices") or []
        assert isinstance(devices, list)
        return cls(
            pod_set=str(d["pod_set"]),
            index=int(str(d["index"])),
            rank=int(str(d["rank"])),
            node=str(d["node"]),
            cpu_milli=int(str(d["cpu_milli"])),
            memory_mib=int(str(d["memory_mib"])),
            devices=tuple(int(x) for x in devices),
            gpu_milli=int(str(d.get("gpu_milli", 0))),
        )


@dataclass(frozen=True)
class Placement:
    job_id: str
    assignments: tuple[TaskAssignment, ...]

    @property
    def nodes(self) -> list[str]:
        return sorted({a.node for a in self.assignments})


class OverAllocation(Exception):
    """Raised when an assignment would take more than a node has: a scheduler bug, never user input."""


@dataclass
class NodeFree:
    """Free capacity of one node: CPU, memory and the free milli-units of each device."""

    node: Node
    cpu_milli: int
    memory_mib: int
    device_free: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, node: Node) -> NodeFree:
        return cls(node, node.cpu_milli, node.memory_mib, [1000] * node.gpu_count)

    @property
    def gpu_free_milli(self) -> int:
        return sum(self.device_free)

    @property
    def whole_free_devices(self) -> int:
        return sum(1 for d in self.device_free if d == 1000)

    def fits(self, req: TaskRequest) -> bool:
        if req.cpu_milli > self.cpu_milli or req.memory_mib > self.memory_mib:
            return False
        if req.gpu_count == 0:
            return True
        return self.pick_devices(req) is not None

    def pick_devices(self, req: TaskRequest) -> tuple[int, ...] | None:
        """Devices for a request: whole free devices, or the fullest device a share still fits on."""
        if req.gpu_count == 0:
            return ()
        if req.gpu_milli >= 1000:
            whole = [i for i, f in enumerate(self.device_free) if f == 1000]
            return tuple(whole[: req.gpu_count]) if len(whole) >= req.gpu_count else None
        candidates = [(f, i) for i, f in enumerate(self.device_free) if f >= req.gpu_milli]
        if not candidates:
            return None
        # Best fit: the device with the least free share that still fits, to keep whole devices whole.
        return (min(candidates)[1],)

    def take(self, a: TaskAssignment) -> None:
        if a.cpu_milli > self.cpu_milli or a.memory_mib > self.memory_mib:
            raise OverAllocation(f"node {self.node.name}: CPU or memory over-allocated by task {a.rank}")
        for d in a.devices:
            if d >= len(self.device_free) or self.device_free[d] < a.gpu_milli:
                raise OverAllocation(f"node {self.node.name}: device {d} over-allocated by task {a.rank}")
        self.cpu_milli -= a.cpu_milli
        self.memory_mib -= a.memory_mib
        for d in a.devices:
            self.device_free[d] -= a.gpu_milli

    def give_back(self, a: TaskAssignment) -> None:
        self.cpu_milli += a.cpu_milli
        self.memory_mib += a.memory_mib
        for d in a.devices:
            self.device_free[d] += a.gpu_milli


def free_capacity(nodes: Iterable[Node], placements: Iterable[Placement]) -> dict[str, NodeFree]:
    """Free capacity per node after the given placements; raises OverAllocation if they overlap."""
    free = {n.name: NodeFree.of(n) for n in nodes}
    for p in placements:
        for a in p.assignments:
            if a.node in free:
                free[a.node].take(a)
    return free
