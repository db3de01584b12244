"""A placed job as Kubernetes objects: one Pod per rank plus a headless Service for rendezvous.

Pure: takes the tasks of a placement (and the constraints of the job's manifest) and returns plain
dicts in the Kubernetes JSON shape, which the backend applies with the official client and the
tests check against the Kubernetes OpenAPI schemas. One Pod per rank rather than an indexed Job,
because every rank is pinned to its own node, which a Job's single pod template cannot say.

Pinning is either ``nodeName`` (the kubelet runs the pod on that node; kube-scheduler is bypassed)
or ``scheduler``: the pod names modelplane as its ``schedulerName`` and the backend posts a
Binding to the node our scheduler chose, as any secondary scheduler does. Either way the pod also
carries the manifest's exact ``nodeAffinity``, so the kubelet's admission check agrees with ours.

Devices are the device plugin's to hand out: a pod asks for ``nvidia.com/gpu: 2`` (the family's
resource key) and the plugin sets the visibility variables, so none are set here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel

from modelplane.backends.base import TaskLaunch
from modelplane.backends.local import _local_layout, task_environment
from modelplane.core.accelerators import families, family_of_model
from modelplane.core.affinity import NodeAffinity, Toleration
from modelplane.core.errors import InvalidSpec

MANAGED_BY = {"app.kubernetes.io/managed-by": "modelplane"}
JOB_LABEL = "modelplane.io/job-id"
JOB_NAME_LABEL = "modelplane.io/job-name"
RANK_LABEL = "modelplane.io/rank"
POD_SET_LABEL = "modelplane.io/pod-set"
JOB_ID_ANNOTATION = "modelplane.io/job-id"
GPU_MILLI_ANNOTATION = "modelplane.io/gpu-milli"
CONTAINER = "task"

Pinning = Literal["nodeName", "scheduler"]


@dataclass(frozen=True)
class RenderOptions:
    namespace: str = "default"
    pinning: Pinning = "nodeName"
    scheduler_name: str = "modelplane"
    default_image: str | None = None
    service_account: str | None = None
    termination_grace_seconds: int = 30


@dataclass(frozen=True)
class PodSetConstraints:
    """What the manifest says about every pod of one pod set (from ``core.spec.to_workload``)."""

    affinity: NodeAffinity | None = None
    tolerations: tuple[Toleration, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    cpu_milli: int = 0
    memory_mib: int = 0
    gpu_count: int = 0
    gpu_milli: int = 0


@dataclass(frozen=True)
class RenderedJob:
    service: dict[str, Any]
    pods: list[dict[str, Any]]
    bindings: list[dict[str, Any]]  # empty unless pinning is "scheduler"

    def objects(self) -> list[dict[str, Any]]:
        return [self.service, *self.pods, *self.bindings]


def constraints_from_manifest(manifest: Any) -> dict[str, PodSetConstraints]:
    """Per pod set, the scheduling constraints and resources of a parsed manifest."""
    from modelplane.core.spec import to_workload

    workload = to_workload(manifest, job_id="render", created_at=0.0)
    return {
        ps.name: PodSetConstraints(
            affinity=ps.affinity,
            tolerations=ps.tolerations,
            node_selector=dict(ps.node_selector),
            cpu_milli=ps.request.cpu_milli,
            memory_mib=ps.request.memory_mib,
            gpu_count=ps.request.gpu_count,
            gpu_milli=ps.request.gpu_milli,
        )
        for ps in workload.pod_sets
    }


def _dns_label(text: str, limit: int = 63) -> str:
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return out[:limit].rstrip("-") or "x"


def job_label(job_id: str) -> str:
    """A label value that names the job: the id itself when it is a valid label value, else a hash."""
    if re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", job_id):
        return job_id
    return "h-" + hashlib.sha256(job_id.encode()).hexdigest()[:40]


def job_selector(job_id: str) -> str:
    return f"{JOB_LABEL}={job_label(job_id)}"


def service_name(task: TaskLaunch) -> str:
    """Unique per job (same-named resubmissions differ by id) and short enough for pod DNS names."""
    digest = hashlib.sha256(task.job_id.encode()).hexdigest()[:8]
    return f"{_dns_label(task.job_name, 40)}-{digest}"


def pod_name(task: TaskLaunch) -> str:
    return f"{service_name(task)}-{task.rank}"


def task_host(task: TaskLaunch) -> str:
    """The DNS name the other pods of the job reach this task at: ``<pod>.<service>``, the record
    the headless Service publishes for a pod with that hostname and subdomain (resolved through the
    pod's namespace search path). MASTER_ADDR and a federation's certificates name it."""
    return f"{pod_name(task)}.{service_name(task)}"


def _quantity_cpu(milli: int) -> str:
    return f"{milli // 1000}" if milli % 1000 == 0 else f"{milli}m"


def _resources(task: TaskLaunch, c: PodSetConstraints) -> dict[str, Any]:
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if c.cpu_milli:
        requests["cpu"] = _quantity_cpu(c.cpu_milli)
    if c.memory_mib:
        requests["memory"] = limits["memory"] = f"{c.memory_mib}Mi"
    devices = len(task.devices) or c.gpu_count
    if task.gpu_milli and not devices:
        devices = 1
    if devices:
        key = family_of_model(task.accelerator_model or "").resource_key
        limits[key] = str(devices)  # extended resources: the request defaults to the limit
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _environment(task: TaskLaunch, layout: tuple[int, int, int]) -> list[dict[str, str]]:
    env = task_environment(task, *layout, base={})
    plugin_owned = {k for fam in families() for k in fam.visibility([])}
    return [{"name": k, "value": v} for k, v in sorted(env.items()) if k not in plugin_owned or k in task.env]


def _k8s_json(model: BaseModel) -> Any:
    """A core.affinity model in Kubernetes' JSON, as the user wrote it (defaults left out)."""
    return model.model_dump(mode="json", by_alias=True, exclude_defaults=True)


def _labels(task: TaskLaunch) -> dict[str, str]:
    return {
        **MANAGED_BY,
        JOB_LABEL: job_label(task.job_id),
        JOB_NAME_LABEL: _dns_label(task.job_name),
        RANK_LABEL: str(task.rank),
        POD_SET_LABEL: _dns_label(task.pod_set),
    }


def render_pod(
    task: TaskLaunch, layout: tuple[int, int, int], c: PodSetConstraints, opts: RenderOptions, service: str
) -> dict[str, Any]:
    image = task.image or opts.default_image
    if not image:
        raise InvalidSpec(
            f"job {task.job_name!r} has no container image for pod set {task.pod_set!r}",
            hint="set spec.template.image in the manifest (the Kubernetes backend runs containers)",
            field="spec.template.image",
        )
    name = pod_name(task)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "command": list(task.command),
        "env": _environment(task, layout),
    }
    if task.working_dir:
        container["workingDir"] = task.working_dir
    resources = _resources(task, c)
    if resources:
        container["resources"] = resources
    if task.rank == 0:
        container["ports"] = [{"name": "rendezvous", "containerPort": task.master_port, "protocol": "TCP"}]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "hostname": name,
        "subdomain": service,
        "terminationGracePeriodSeconds": opts.termination_grace_seconds,
        "containers": [container],
    }
    if opts.pinning == "nodeName":
        spec["nodeName"] = task.node
    else:
        spec["schedulerName"] = opts.scheduler_name
    if c.affinity is not None:
        spec["affinity"] = {"nodeAffinity": _k8s_json(c.affinity)}
    if c.tolerations:
        spec["tolerations"] = [_k8s_json(t) for t in c.tolerations]
    if c.node_selector:
        spec["nodeSelector"] = dict(c.node_selector)
    if opts.service_account:
        spec["serviceAccountName"] = opts.service_account
    annotations = {JOB_ID_ANNOTATION: task.job_id, "modelplane.io/node": task.node}
    if task.gpu_milli and task.gpu_milli < 1000:
        annotations[GPU_MILLI_ANNOTATION] = str(task.gpu_milli)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": opts.namespace,
            "labels": _labels(task),
            "annotations": annotations,
        },
        "spec": spec,
    }


def render_job(
    tasks: Sequence[TaskLaunch],
    constraints: Mapping[str, PodSetConstraints] | None = None,
    options: RenderOptions | None = None,
) -> RenderedJob:
    """The objects of one placed job; all tasks must belong to the same job."""
    if not tasks:
        raise InvalidSpec("nothing to render: the placement has no tasks", hint="place the job first")
    opts = options or RenderOptions()
    if len({t.job_id for t in tasks}) != 1:
        raise InvalidSpec("render_job takes the tasks of one job", hint="render each job on its own")
    ordered = sorted(tasks, key=lambda t: t.rank)
    service = service_name(ordered[0])
    master = task_host(ordered[0])
    ordered = [replace(t, master_addr=master) for t in ordered]
    layout = _local_layout(ordered)
    constraints = constraints or {}
    pods = [
        render_pod(
            t, layout[(t.job_id, t.rank)], constraints.get(t.pod_set, PodSetConstraints()), opts, service
        )
        for t in ordered
    ]
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service,
            "namespace": opts.namespace,
            "labels": {**MANAGED_BY, JOB_LABEL: job_label(ordered[0].job_id)},
            "annotations": {JOB_ID_ANNOTATION: ordered[0].job_id},
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {JOB_LABEL: job_label(ordered[0].job_id)},
            "ports": [
                {
                    "name": "rendezvous",
                    "port": ordered[0].master_port,
                    "targetPort": ordered[0].master_port,
                    "protocol": "TCP",
                }
            ],
        },
    }
    bindings = []
    if opts.pinning == "scheduler":
        bindings = [
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": p["metadata"]["name"], "namespace": opts.namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": t.node},
            }
            for p, t in zip(pods, ordered, strict=True)
        ]
    return RenderedJob(service=svc, pods=pods, bindings=bindings)
