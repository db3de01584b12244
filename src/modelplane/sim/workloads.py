"""Turning trace jobs into workloads, pools and queues the schedulers understand."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from modelplane.core.node import Node
from modelplane.core.queue import QueueSpec
from modelplane.core.topology import TopologyPath
from modelplane.core.workload import PodSet, TaskRequest, Workload
from modelplane.sim.engine import SimJob

GPU_MODEL = "NVIDIA-P100"  # Philly's GPUs were of one kind for scheduling purposes


def gpu_pool(nodes: int, gpus_per_node: int = 8, nodes_per_switch: int = 8, switches_per_group: int = 4,
             model: str = GPU_MODEL, cpu_per_gpu: int = 6, mem_gib_per_gpu: int = 56) -> list[Node]:
    """Identical GPU nodes under top-of-rack switches, switches grouped (pods of racks)."""
    out = []
    for i in range(nodes):
        sw = i // nodes_per_switch
        out.append(Node(
            name=f"node-{i:04d}",
            cpu_milli=cpu_per_gpu * gpus_per_node * 1000,
            memory_mib=mem_gib_per_gpu * gpus_per_node * 1024,
            gpu_model=model,
            gpu_count=gpus_per_node,
            topology=TopologyPath(group=f"g{sw // switches_per_group}", switch=f"s{sw}"),
        ))
    return out


def gang_workload(job_id: str, queue: str, gpus: int, submit: float, duration_estimate: float | None,
                  gpus_per_node: int = 8, priority: int = 0, model: str | None = None) -> Workload:
    """A job of ``gpus`` GPUs as one gang: whole nodes' worth per task when larger than a node."""
    if gpus <= gpus_per_node:
        tasks, per = 1, gpus
    else:
        per = gpus_per_node if gpus % gpus_per_node == 0 else next(d for d in (4, 2, 1) if gpus % d == 0)
        tasks = gpus // per
    req = TaskRequest(cpu_milli=per * 1000, memory_mib=per * 4096, gpu_count=per, gpu_milli=1000,
                      gpu_models=(model,) if model else ())
    return Workload(
        job_id=job_id, name=job_id, queue=queue, kind="training",
        pod_sets=(PodSet("worker", tasks, req),), priority=priority, gang=True,
        created_at=submit, estimated_duration_s=duration_estimate, team=queue,
    )


def proportional_queues(shares: Mapping[str, float], total_gpus: float, all_queues: Sequence[str],
                        cohort: str = "all", model: str = GPU_MODEL) -> dict[str, QueueSpec]:
    """Queues with nominal quota proportional to ``shares`` (others get none); all may borrow."""
    total_share = sum(shares.values()) or 1.0
    out = {}
    for q in all_queues:
        quota = round(total_gpus * shares.get(q, 0.0) / total_share, 3)
        name = q.lower()
        out[q] = QueueSpec(name=name if name[0].isalnum() else f"q{name}", kind="batch", team=q, cohort=cohort,
                           quota={model: quota}, borrowing_limit=None)
    return out


def sim_jobs(rows: Sequence[tuple[str, str, int, float, float]], gpus_per_node: int = 8,
             estimate: bool = True) -> list[SimJob]:
    """(job_id, queue, gpus, submit, duration) -> SimJobs; the estimate is the true duration if asked."""
    return [SimJob(gang_workload(j, q, g, s, d if estimate else None, gpus_per_node), d) for j, q, g, s, d in rows]
