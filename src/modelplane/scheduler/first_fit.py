"""First fit: the simplest correct policy, honouring affinity, taints, TEE, models and capacity.

It is the baseline the real policies are measured against, and the fallback while they are built.
Gangs are all-or-nothing: a workload's tasks are tentatively placed, and rolled back if one fails.
"""

from __future__ import annotations

from modelplane.core.affinity import matches_node_selector, untolerated_taints
from modelplane.core.node import Node
from modelplane.core.placement import NodeFree, Placement, TaskAssignment, free_capacity
from modelplane.core.workload import PodSet, Workload
from modelplane.scheduler.interface import SchedulingInput, SchedulingResult


def node_admits(node: Node, ps: PodSet, *, check_state: bool = True) -> bool:
    """Hard constraints only: state, selector, required affinity, taints, TEE, accelerator model."""
    if check_state and not node.schedulable:
        return False
    if ps.node_selector and not matches_node_selector(ps.node_selector, node.labels):
        return False
    if ps.affinity is not None and not ps.affinity.required_matches(node.name, node.labels):
        return False
    if untolerated_taints(list(node.taints), list(ps.tolerations)):
        return False
    if ps.tee is not None and (node.tee is None or (ps.tee != "any" and node.tee != ps.tee)):
        return False
    req = ps.request
    if req.wants_gpu:
        if not node.gpu_model or node.gpu_count < req.gpu_count:
            return False
        if req.gpu_models and node.gpu_model not in req.gpu_models:
            return False
    return True


def try_place(workload: Workload, free: dict[str, NodeFree], nodes: list[Node]) -> Placement | None:
    """Place every task of the workload or none; on failure ``free`` is left as it was."""
    taken: list[TaskAssignment] = []
    rank = 0
    for ps in workload.pod_sets:
        candidates = [n for n in nodes if node_admits(n, ps)]
        for index in range(ps.count):
            placed = False
            for n in candidates:
                nf = free[n.name]
                if not nf.fits(ps.request):
                    continue
                devices = nf.pick_devices(ps.request)
                assert devices is not None
                a = TaskAssignment(
                    pod_set=ps.name,
                    index=index,
                    rank=rank,
                    node=n.name,
                    cpu_milli=ps.request.cpu_milli,
                    memory_mib=ps.request.memory_mib,
                    devices=devices,
                    gpu_milli=ps.request.gpu_milli if devices else 0,
                )
                nf.take(a)
                taken.append(a)
                placed = True
                break
            if not placed:
                for a in taken:
                    free[a.node].give_back(a)
                return None
            rank += 1
    return Placement(workload.job_id, tuple(taken))


class FirstFitScheduler:
    name = "first-fit"

    def schedule(self, inp: SchedulingInput) -> SchedulingResult:
        nodes = sorted(inp.nodes, key=lambda n: n.name)
        free = free_capacity(nodes, (r.placement for r in inp.running))
        result = SchedulingResult()
        order = sorted(inp.pending, key=lambda w: (-w.priority, w.created_at, w.job_id))
        for w in order:
            if w.queue not in inp.queues:
                result.pending_reasons[w.job_id] = f"queue {w.queue!r} does not exist; create it or change spec.queue"
                continue
            placement = try_place(w, free, nodes)
            if placement is None:
                result.pending_reasons[w.job_id] = explain_unplaceable(w, nodes)
            else:
                result.placements.append(placement)
        return result


def explain_unplaceable(w: Workload, nodes: list[Node]) -> str:
    for ps in w.pod_sets:
        eligible = [n for n in nodes if node_admits(n, ps)]
        if not eligible:
            return f"no node satisfies the constraints of pod set {ps.name!r} (selector, affinity, taints, TEE, model)"
    return f"not enough free capacity for all {w.task_count} task(s) at once; waiting for resources to free up"


def unsatisfiable(w: Workload, nodes: list[Node]) -> str | None:
    """Why no node of the pool, even empty, could ever hold a task of this workload; None if some can.

    Used at submission: a job that can never run is refused with the reason, not left pending forever.
    """
    if not nodes:
        return None  # an empty pool may still grow; the job waits
    for ps in w.pod_sets:
        # Whatever state a node is in now (cordoned, not ready), it may come back.
        eligible = [n for n in nodes if node_admits(n, ps, check_state=False)]
        if not eligible:
            return (f"pod set {ps.name!r}: no node matches its nodeSelector, required node affinity, "
                    "tolerations, TEE and accelerator model")
        if not any(NodeFree.of(n).fits(ps.request) for n in eligible):
            return (f"pod set {ps.name!r}: no matching node is large enough for one task "
                    f"(cpu {ps.request.cpu_milli}m, memory {ps.request.memory_mib}Mi, "
                    f"{ps.request.gpu_count} x {ps.request.gpu_milli / 1000:g} accelerator)")
    return None
