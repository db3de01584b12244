"""Kubernetes Node objects as modelplane nodes (``modelplane cluster import --kubeconfig``).

Pure mapping over the JSON form of a Node (what ``kubectl get node -o json`` prints, or a client
model turned into it), so that it is testable without a cluster. Devices come from the vendor
device plugins' extended resources in ``status.allocatable`` (``nvidia.com/gpu``, ``amd.com/gpu``,
``huawei.com/Ascend910``, ``habana.ai/gaudi``: the keys of ``core.accelerators``); the model from
the labels the vendors' feature discovery puts on the node (``nvidia.com/gpu.product``, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modelplane.core.accelerators import AcceleratorFamily, families, family_of_model
from modelplane.core.affinity import Taint, TaintEffect
from modelplane.core.errors import InvalidSpec
from modelplane.core.node import AcceleratorSpec, NodeSpec, NodeState, TopologySpec
from modelplane.core.quantity import parse_cpu_milli, parse_memory_mib

ZONE_LABEL = "topology.kubernetes.io/zone"
DEFAULT_SWITCH_LABEL = "topology.modelplane.io/switch"

# Labels that name the accelerator model, per family, most specific first.
MODEL_LABELS: dict[str, tuple[str, ...]] = {
    "nvidia": ("nvidia.com/gpu.product",),
    "amd": ("amd.com/gpu.product-name", "amd.com/gpu.family"),
    "ascend": ("node.kubernetes.io/npu.chip.name", "accelerator"),
    "gaudi": ("habana.ai/device.type", "habana.ai/gaudi.product"),
}
MEMORY_LABELS: dict[str, str] = {"nvidia": "nvidia.com/gpu.memory"}  # MiB, from GPU feature discovery
DEFAULT_MODEL = {"nvidia": "NVIDIA-GPU", "amd": "AMD-GPU", "ascend": "Ascend910", "gaudi": "Gaudi"}
SPOT_LABELS = {
    "cloud.google.com/gke-spot": "true",
    "cloud.google.com/gke-preemptible": "true",
    "eks.amazonaws.com/capacityType": "SPOT",
    "karpenter.sh/capacity-type": "spot",
    "kubernetes.azure.com/scalesetpriority": "spot",
}


@dataclass(frozen=True)
class ImportedNode:
    """A node as read from Kubernetes: its spec and whether work may go there now."""

    spec: NodeSpec
    state: NodeState


def as_dict(node: Any) -> dict[str, Any]:
    """The JSON form of a Node, from a dict or from a ``kubernetes.client.V1Node``."""
    if isinstance(node, Mapping):
        return dict(node)
    try:
        from kubernetes.client import ApiClient
    except ImportError as exc:  # only client models need the package; dicts do not
        raise InvalidSpec("a Kubernetes client object was given but the kubernetes package is missing",
                          hint="pip install 'modelplane[k8s]'") from exc
    api: Any = ApiClient()
    data = api.sanitize_for_serialization(node)
    if not isinstance(data, dict):
        raise InvalidSpec(f"not a Kubernetes Node: {type(node).__name__}", hint="pass V1Node objects or dicts")
    return data


def _model(family: AcceleratorFamily, labels: Mapping[str, str]) -> str:
    product = next((labels[k] for k in MODEL_LABELS.get(family.name, ()) if labels.get(k)), "")
    if not product:
        return DEFAULT_MODEL.get(family.name, family.vendor)
    # "Instinct-MI250" alone would not say AMD; prefix the vendor when the name does not.
    if family_of_model(product) is not family:
        return f"{family.vendor}-{product}"
    return product


def _count(value: Any, where: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise InvalidSpec(f"{where} is {value!r}, not a whole number of devices",
                          hint="device plugin resources are integers") from None


def _taints(raw: Iterable[Mapping[str, Any]], node: str) -> list[Taint]:
    out = []
    for t in raw:
        try:
            effect = TaintEffect(str(t.get("effect", "")))
        except ValueError:
            raise InvalidSpec(f"node {node} has a taint with unknown effect {t.get('effect')!r}",
                              hint="effects are NoSchedule, PreferNoSchedule or NoExecute",
                              field="spec.taints") from None
        out.append(Taint(key=str(t["key"]), value=str(t.get("value") or ""), effect=effect))
    return out


def node_state(node: Mapping[str, Any]) -> NodeState:
    if (node.get("spec") or {}).get("unschedulable"):
        return NodeState.CORDONED
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return NodeState.READY if cond.get("status") == "True" else NodeState.NOT_READY
    return NodeState.NOT_READY  # a node that never reported Ready is not ready


def import_node(node: Any, switch_label: str = DEFAULT_SWITCH_LABEL) -> ImportedNode:
    data = as_dict(node)
    meta = data.get("metadata") or {}
    name = str(meta.get("name") or "")
    if not name:
        raise InvalidSpec("a Kubernetes node without metadata.name", hint="pass whole Node objects",
                          field="metadata.name")
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    status = data.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    accelerators = None
    for fam in families():
        if fam.resource_key in alloc:
            count = _count(alloc[fam.resource_key], f"node {name} {fam.resource_key}")
            if count > 0:
                mem = labels.get(MEMORY_LABELS.get(fam.name, ""), "")
                accelerators = AcceleratorSpec(model=_model(fam, labels), count=count,
                                               memory_gib=round(int(mem) / 1024, 1) if mem.isdigit() else None)
                break
    cpu_milli = parse_cpu_milli(str(alloc.get("cpu", "0")), f"node {name} status.allocatable.cpu")
    memory_mib = parse_memory_mib(str(alloc.get("memory", "0")), f"node {name} status.allocatable.memory")
    spec = NodeSpec(
        name=name,
        labels=labels,
        taints=_taints((data.get("spec") or {}).get("taints") or [], name),
        cpu=f"{cpu_milli}m",
        memory=f"{memory_mib}Mi",
        accelerators=accelerators,
        topology=TopologySpec(group=labels.get(ZONE_LABEL, "default"), switch=labels.get(switch_label, "default")),
        spot=any(labels.get(k, "").lower() == v.lower() for k, v in SPOT_LABELS.items()),
    )
    return ImportedNode(spec, node_state(data))


def import_nodes(nodes: Sequence[Any], switch_label: str = DEFAULT_SWITCH_LABEL) -> list[ImportedNode]:
    """Every node of a NodeList's ``items`` (dicts or client models), sorted by name."""
    return sorted((import_node(n, switch_label) for n in nodes), key=lambda n: n.spec.name)


def import_from_cluster(kubeconfig: str | None = None, context: str | None = None,
                        switch_label: str = DEFAULT_SWITCH_LABEL) -> list[ImportedNode]:
    """Read the nodes of a live cluster with the official client (kubeconfig, or in-cluster config)."""
    from kubernetes import client

    from modelplane.backends.kubernetes import load_client

    core = client.CoreV1Api(load_client(kubeconfig, context))
    return import_nodes(core.list_node().items, switch_label)
