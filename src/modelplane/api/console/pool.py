"""What the pool page draws: devices per vendor and model, allocated / idle, and how much of the
idle part is fragmented (idle devices on nodes that already run something)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from modelplane.core.node import Node
from modelplane.core.placement import Placement


@dataclass
class NodeDevices:
    name: str
    model: str
    total: int
    allocated: float
    state: str

    @property
    def idle(self) -> float:
        return max(self.total - self.allocated, 0.0)


@dataclass
class ModelDevices:
    vendor: str
    model: str
    nodes: list[NodeDevices] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(n.total for n in self.nodes)

    @property
    def allocated(self) -> float:
        return sum(n.allocated for n in self.nodes)

    @property
    def idle(self) -> float:
        return sum(n.idle for n in self.nodes)

    @property
    def fragmented(self) -> float:
        """Idle devices on partly used nodes: free, but not as a whole node."""
        return sum(n.idle for n in self.nodes if 0 < n.allocated < n.total)


def allocated_devices(nodes: Mapping[str, Node], placements: Iterable[Placement]) -> dict[str, float]:
    """Devices in use per node (fractional shares count as their fraction)."""
    used: dict[str, float] = {}
    for placement in placements:
        for a in placement.assignments:
            node = nodes.get(a.node)
            if node and node.gpu_model and a.devices:
                used[a.node] = used.get(a.node, 0.0) + a.gpu_milli * len(a.devices) / 1000
    return used


def pool_by_model(nodes: Mapping[str, Node], placements: Iterable[Placement]) -> list[ModelDevices]:
    used = allocated_devices(nodes, placements)
    out: dict[str, ModelDevices] = {}
    for name, node in sorted(nodes.items()):
        family = node.family
        if family is None or not node.gpu_model:
            continue
        group = out.setdefault(node.gpu_model, ModelDevices(family.vendor, node.gpu_model))
        group.nodes.append(NodeDevices(name, node.gpu_model, node.gpu_count, used.get(name, 0.0),
                                       node.state.value))
    return sorted(out.values(), key=lambda m: (m.vendor, m.model))
