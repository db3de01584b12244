"""Nodes of the pool: what they offer, where they sit, and whether work may go there."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from modelplane.core.accelerators import AcceleratorFamily, family_of_model
from modelplane.core.affinity import Taint
from modelplane.core.quantity import parse_cpu_milli, parse_memory_mib
from modelplane.core.topology import TopologyPath


class NodeState(StrEnum):
    READY = "Ready"
    NOT_READY = "NotReady"
    CORDONED = "Cordoned"
    DRAINING = "Draining"


class _SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AcceleratorSpec(_SpecModel):
    model: str = Field(min_length=1, description="accelerator model, e.g. NVIDIA-A100, AMD-MI250, Ascend-910B")
    count: Annotated[int, Field(ge=0)]
    memory_gib: float | None = Field(default=None, alias="memoryGiB")


class TopologySpec(_SpecModel):
    group: str = "default"
    switch: str = "default"


class NodeSpec(_SpecModel):
    """A node as an operator writes it in a cluster file or registers it through the API."""

    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$")
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    cpu: str | int | float = "8"
    memory: str | int = "32Gi"
    accelerators: AcceleratorSpec | None = None
    topology: TopologySpec = Field(default_factory=TopologySpec)
    spot: bool = False
    price_per_hour: float = Field(default=0.0, ge=0, alias="pricePerHour")
    tee: str | None = Field(default=None, description="trusted execution environment offered: sgx, tdx, sev-snp")


@dataclass(frozen=True)
class Node:
    """The scheduler's view of a node: integers only, immutable."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpu_model: str | None = None
    gpu_count: int = 0
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    taints: tuple[Taint, ...] = ()
    topology: TopologyPath = field(default_factory=TopologyPath)
    spot: bool = False
    price_per_hour: float = 0.0
    tee: str | None = None
    state: NodeState = NodeState.READY

    @property
    def family(self) -> AcceleratorFamily | None:
        return family_of_model(self.gpu_model) if self.gpu_model and self.gpu_count else None

    @property
    def schedulable(self) -> bool:
        return self.state is NodeState.READY

    @classmethod
    def from_spec(cls, spec: NodeSpec, state: NodeState = NodeState.READY) -> Node:
        acc = spec.accelerators
        labels = dict(spec.labels)
        # Well-known labels, so that node affinity can select on them as in Kubernetes.
        labels.setdefault("kubernetes.io/hostname", spec.name)
        labels.setdefault("topology.modelplane.io/group", spec.topology.group)
        labels.setdefault("topology.modelplane.io/switch", spec.topology.switch)
        if acc and acc.count:
            labels.setdefault("modelplane.io/accelerator", acc.model)
            labels.setdefault("modelplane.io/accelerator-family", family_of_model(acc.model).name)
            labels.setdefault("modelplane.io/accelerator-count", str(acc.count))
        if spec.spot:
            labels.setdefault("modelplane.io/spot", "true")
        if spec.tee:
            labels.setdefault("modelplane.io/tee", spec.tee)
        return cls(
            name=spec.name,
            cpu_milli=parse_cpu_milli(spec.cpu, "cpu"),
            memory_mib=parse_memory_mib(spec.memory, "memory"),
            gpu_model=acc.model if acc and acc.count else None,
            gpu_count=acc.count if acc else 0,
            labels=MappingProxyType(labels),
            taints=tuple(spec.taints),
            topology=TopologyPath(spec.topology.group, spec.topology.switch),
            spot=spec.spot,
            price_per_hour=spec.price_per_hour,
            tee=spec.tee,
            state=state,
        )
