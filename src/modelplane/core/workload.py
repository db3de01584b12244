"""What the scheduler places: a workload made of pod sets, each a number of identical tasks.

Every job kind (training, inference, pipeline, federated) is turned into a Workload, so admission
and placement need to know nothing about kinds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from modelplane.core.affinity import NodeAffinity, Toleration


@dataclass(frozen=True)
class TaskRequest:
    """Resources of one task. ``gpu_count`` devices, each used at ``gpu_milli`` (1000 = whole)."""

    cpu_milli: int = 0
    memory_mib: int = 0
    gpu_count: int = 0
    gpu_milli: int = 0
    gpu_models: tuple[str, ...] = ()  # acceptable accelerator models; empty = any

    @property
    def total_gpu_milli(self) -> int:
        return self.gpu_count * self.gpu_milli

    @property
    def wants_gpu(self) -> bool:
        return self.gpu_count > 0


@dataclass(frozen=True)
class PodSet:
    """``count`` identical tasks of one role (workers, replicas, a server, a party)."""

    name: str
    count: int
    request: TaskRequest
    affinity: NodeAffinity | None = None
    tolerations: tuple[Toleration, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tee: str | None = None  # None: any node; "any": any TEE node; else that TEE kind


@dataclass(frozen=True)
class Workload:
    job_id: str
    name: str
    queue: str
    kind: str
    pod_sets: tuple[PodSet, ...]
    priority: int = 0
    gang: bool = True
    spread: bool = False  # inference replicas: prefer separate failure domains
    created_at: float = 0.0
    estimated_duration_s: float | None = None
    deadline: float | None = None
    team: str = "default"

    @property
    def task_count(self) -> int:
        return sum(ps.count for ps in self.pod_sets)

    @property
    def total_gpu_milli(self) -> int:
        return sum(ps.count * ps.request.total_gpu_milli for ps in self.pod_sets)
