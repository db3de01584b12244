"""Ray's node inventory as modelplane nodes: pure functions over the dicts ``ray.nodes()`` returns.

Kept apart from the backend so that the mapping is testable without a cluster and the backend
module holds only I/O. A Ray node becomes a NodeSpec named, in order of preference, by its
``modelplane.io/node-name`` label (set with ``ray start --labels``), else ``ray-<ip>-<id prefix>``
(two Ray nodes may share an IP, as in a test cluster on one machine).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from modelplane.core.accelerators import AcceleratorFamily, family_of_model
from modelplane.core.errors import InvalidSpec
from modelplane.core.node import AcceleratorSpec, NodeSpec, TopologySpec

NAME_LABEL = "modelplane.io/node-name"
NODE_ID_LABEL = "ray.io/node-id"
RAY_NODE_ID_LABEL = "modelplane.io/ray-node-id"
RAY_IP_LABEL = "modelplane.io/ray-node-ip"
RESOURCE_LABEL_PREFIX = "resources.ray.io/"  # a custom Ray resource, visible to node affinity
ACCELERATOR_TYPE_PREFIX = "accelerator_type:"
GROUP_LABELS = ("modelplane.io/topology-group", "topology.kubernetes.io/zone", "ray.io/availability-zone")
SWITCH_LABELS = ("modelplane.io/topology-switch",)

# The Ray resource that counts a family's devices (Ray's own accelerator managers use these keys).
RAY_DEVICE_RESOURCE = {"nvidia": "GPU", "amd": "GPU", "ascend": "NPU", "gaudi": "HPU"}
_DEVICE_KEYS = ("GPU", "NPU", "HPU")
_BUILTIN = {"CPU", "memory", "object_store_memory", *_DEVICE_KEYS}


def ray_device_resource(family: AcceleratorFamily) -> str:
    return RAY_DEVICE_RESOURCE.get(family.name, "GPU")


def node_name(node: Mapping[str, Any]) -> str:
    labels = node.get("Labels") or {}
    if labels.get(NAME_LABEL):
        return str(labels[NAME_LABEL])
    ip = str(node.get("NodeManagerAddress", "unknown")).replace(":", "-")
    return f"ray-{ip}-{str(node.get('NodeID', ''))[:8]}"


def _sanitize_label_value(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63]


def node_spec(node: Mapping[str, Any]) -> NodeSpec:
    """One alive Ray node as the NodeSpec an operator would have written for it."""
    resources: Mapping[str, float] = node.get("Resources") or {}
    ray_labels: Mapping[str, str] = node.get("Labels") or {}
    labels = {str(k): str(v) for k, v in ray_labels.items()}
    labels[RAY_NODE_ID_LABEL] = str(node.get("NodeID", ""))
    labels[RAY_IP_LABEL] = str(node.get("NodeManagerAddress", ""))
    models = [k[len(ACCELERATOR_TYPE_PREFIX):] for k in resources if k.startswith(ACCELERATOR_TYPE_PREFIX)]
    for key, amount in resources.items():
        if key in _BUILTIN or key.startswith(("node:", ACCELERATOR_TYPE_PREFIX)):
            continue
        labels[RESOURCE_LABEL_PREFIX + key] = _sanitize_label_value(f"{amount:g}")
    accelerators = None
    count_key = next((k for k in _DEVICE_KEYS if resources.get(k, 0) >= 1), None)
    if count_key is not None:
        model = models[0] if models else {"GPU": "NVIDIA-GPU", "NPU": "Ascend", "HPU": "Intel-Gaudi"}[count_key]
        if ray_device_resource(family_of_model(model)) != count_key and models:
            raise InvalidSpec(
                f"Ray node {node.get('NodeID')} advertises {count_key} devices but accelerator type {model!r}",
                hint="start the Ray node with the resource key its accelerator family uses "
                     f"({', '.join(f'{f}: {k}' for f, k in RAY_DEVICE_RESOURCE.items())})",
                field="Resources")
        accelerators = AcceleratorSpec(model=model, count=int(resources[count_key]))
    group = next((labels[k] for k in GROUP_LABELS if labels.get(k)), "default")
    switch = next((labels[k] for k in SWITCH_LABELS if labels.get(k)), "default")
    memory_mib = int(float(resources.get("memory", 0)) // (1024 * 1024))
    return NodeSpec(
        name=node_name(node),
        labels=labels,
        cpu=f"{round(float(resources.get('CPU', 0)) * 1000)}m",
        memory=f"{memory_mib}Mi",
        accelerators=accelerators,
        topology=TopologySpec(group=group, switch=switch),
    )


def node_specs(nodes: Sequence[Mapping[str, Any]]) -> list[NodeSpec]:
    """NodeSpecs of the alive nodes, sorted by name; two nodes with one name are an operator error."""
    specs = [node_spec(n) for n in nodes if n.get("Alive", n.get("alive", False))]
    seen: dict[str, str] = {}
    for spec in specs:
        ray_id = spec.labels[RAY_NODE_ID_LABEL]
        if spec.name in seen:
            raise InvalidSpec(f"two Ray nodes ({seen[spec.name]}, {ray_id}) are both named {spec.name!r}",
                              hint=f"give each node its own {NAME_LABEL} label (ray start --labels)",
                              field="Labels")
        seen[spec.name] = ray_id
    return sorted(specs, key=lambda s: s.name)
