"""Hand-made pools, queues and workloads for the scheduler tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from modelplane.core.affinity import NodeAffinity, Taint, Toleration
from modelplane.core.node import Node, NodeSpec, NodeState
from modelplane.core.placement import NodeFree, Placement
from modelplane.core.queue import QueueSpec
from modelplane.core.workload import PodSet, TaskRequest, Workload
from modelplane.scheduler.interface import RunningWorkload
from modelplane.scheduler.scoring import ScoreContext


def node(name: str, model: str | None = "NVIDIA-A100", gpus: int = 8, switch: str = "s0", group: str = "g0",
         cpu: str | int = 64, memory: str = "512Gi", labels: Mapping[str, str] | None = None,
         taints: Sequence[Taint] = (), tee: str | None = None, state: NodeState = NodeState.READY) -> Node:
    spec: dict[str, Any] = {
        "name": name, "cpu": cpu, "memory": memory, "labels": dict(labels or {}), "taints": list(taints),
        "topology": {"group": group, "switch": switch}, "tee": tee,
    }
    if model is not None and gpus:
        spec["accelerators"] = {"model": model, "count": gpus}
    return Node.from_spec(NodeSpec.model_validate(spec), state=state)


def request(gpus: int = 1, milli: int = 1000, cpu: int = 1000, memory: int = 1024,
            models: Sequence[str] = ()) -> TaskRequest:
    return TaskRequest(cpu_milli=cpu, memory_mib=memory, gpu_count=gpus, gpu_milli=milli if gpus else 0,
                       gpu_models=tuple(models))


def workload(job_id: str, count: int = 1, req: TaskRequest | None = None, queue: str = "q", priority: int = 0,
             created_at: float = 0.0, gang: bool = True, spread: bool = False, est: float | None = None,
             affinity: NodeAffinity | None = None, tolerations: Sequence[Toleration] = (),
             selector: Mapping[str, str] | None = None, tee: str | None = None,
             kind: str = "TrainingJob") -> Workload:
    ps = PodSet("worker", count, req or request(), affinity=affinity, tolerations=tuple(tolerations),
                node_selector=MappingProxyType(dict(selector or {})), tee=tee)
    return Workload(job_id=job_id, name=job_id, queue=queue, kind=kind, pod_sets=(ps,), priority=priority,
                    gang=gang, spread=spread, created_at=created_at, estimated_duration_s=est)


def queue(name: str = "q", quota: Mapping[str, float] | None = None, cohort: str | None = None,
          kind: str = "batch", **kw: Any) -> QueueSpec:
    return QueueSpec.model_validate({"name": name, "quota": dict(quota or {}), "cohort": cohort, "kind": kind, **kw})


def running(w: Workload, p: Placement, started_at: float = 0.0,
            last_checkpoint_at: float | None = None) -> RunningWorkload:
    return RunningWorkload(w, p, started_at=started_at, last_checkpoint_at=last_checkpoint_at)


class TinyScorer:
    """Prefers the node with the least free device share left (ties: first candidate); best-fit devices."""

    name = "tiny"

    def score(self, free: NodeFree, req: TaskRequest, ctx: ScoreContext) -> tuple[float, tuple[int, ...]] | None:
        if not free.fits(req):
            return None
        devices = free.pick_devices(req)
        assert devices is not None
        return -float(free.gpu_free_milli), devices


def affinity(doc: dict[str, Any]) -> NodeAffinity:
    return NodeAffinity.model_validate(doc)


EMPTY: Mapping[str, str] = MappingProxyType({})
