"""Kubernetes Node objects (client models and JSON as `kubectl get node -o json` prints) -> NodeSpecs."""

from __future__ import annotations

from typing import Any

import pytest

try:
    from kubernetes import client
except ImportError as exc:  # pragma: no cover - the message is the point
    pytest.fail(f"{exc}: install the Kubernetes extra (pip install 'modelplane[k8s]')", pytrace=False)

from modelplane.backends.k8s_import import import_node, import_nodes
from modelplane.core.accelerators import family_of_model
from modelplane.core.affinity import Taint, TaintEffect
from modelplane.core.errors import InvalidSpec
from modelplane.core.node import Node, NodeState


def model_node(name: str, labels: dict[str, str], allocatable: dict[str, str], *, ready: str = "True",
               taints: list[client.V1Taint] | None = None, unschedulable: bool | None = None) -> client.V1Node:
    return client.V1Node(
        api_version="v1", kind="Node",
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1NodeSpec(taints=taints, unschedulable=unschedulable),
        status=client.V1NodeStatus(
            allocatable=allocatable, capacity=allocatable,
            conditions=[client.V1NodeCondition(type="Ready", status=ready)]),
    )


def json_node(name: str, labels: dict[str, str], allocatable: dict[str, str], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "spec": spec,
            "status": {"allocatable": allocatable, "capacity": allocatable,
                       "conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": "True"}]}}


NVIDIA = model_node(
    "gpu-a100-0",
    {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920",
     "topology.kubernetes.io/zone": "zone-a", "topology.modelplane.io/switch": "leaf-3",
     "kubernetes.io/hostname": "gpu-a100-0"},
    {"cpu": "95900m", "memory": "1056410076Ki", "nvidia.com/gpu": "8", "pods": "110"},
    taints=[client.V1Taint(key="nvidia.com/gpu", value="present", effect="NoSchedule")],
)
AMD = json_node("amd-0", {"amd.com/gpu.product-name": "Instinct-MI250", "eks.amazonaws.com/capacityType": "SPOT"},
                {"cpu": "64", "memory": "512Gi", "amd.com/gpu": "4"})
ASCEND = json_node("npu-0", {"node.kubernetes.io/npu.chip.name": "Ascend-910B", "rack": "r7"},
                   {"cpu": "192", "memory": "1536Gi", "huawei.com/Ascend910": "8"},
                   taints=[{"key": "modelplane.io/npu", "effect": "NoSchedule"}])
GAUDI = json_node("gaudi-0", {}, {"cpu": "160", "memory": "1Ti", "habana.ai/gaudi": "8"})
CPU = json_node("cpu-0", {"topology.kubernetes.io/zone": "zone-b"}, {"cpu": "16", "memory": "64Gi"})


def test_nvidia_node_from_a_client_model() -> None:
    imported = import_node(NVIDIA)
    spec = imported.spec
    assert imported.state is NodeState.READY
    assert spec.accelerators is not None
    assert (spec.accelerators.model, spec.accelerators.count, spec.accelerators.memory_gib) == (
        "NVIDIA-A100-SXM4-80GB", 8, 80.0)
    assert spec.topology.group == "zone-a" and spec.topology.switch == "leaf-3"
    assert spec.taints == [Taint(key="nvidia.com/gpu", value="present", effect=TaintEffect.NO_SCHEDULE)]
    node = Node.from_spec(spec)  # what the scheduler sees
    assert node.cpu_milli == 95900 and abs(node.memory_mib - 1056410076 / 1024) < 1  # Ki -> Mi
    assert node.family is not None and node.family.name == "nvidia"
    assert node.labels["modelplane.io/accelerator-family"] == "nvidia"


@pytest.mark.parametrize(("raw", "model", "family", "count"), [
    (AMD, "AMD-Instinct-MI250", "amd", 4),  # vendor prefixed: the product label alone says no vendor
    (ASCEND, "Ascend-910B", "ascend", 8),
    (GAUDI, "Gaudi", "gaudi", 8),
])
def test_every_vendor_device_plugin_maps_to_its_family(raw: dict[str, Any], model: str, family: str,
                                                       count: int) -> None:
    spec = import_node(raw).spec
    assert spec.accelerators is not None
    assert spec.accelerators.model == model and spec.accelerators.count == count
    assert family_of_model(spec.accelerators.model).name == family


def test_cpu_node_spot_and_taints_from_json() -> None:
    nodes = {n.spec.name: n for n in import_nodes([CPU, AMD, ASCEND, NVIDIA, GAUDI])}
    assert list(nodes) == sorted(nodes)
    assert nodes["cpu-0"].spec.accelerators is None and nodes["cpu-0"].spec.topology.group == "zone-b"
    assert nodes["amd-0"].spec.spot and not nodes["cpu-0"].spec.spot
    assert nodes["npu-0"].spec.taints[0].key == "modelplane.io/npu"


def test_switch_label_is_configurable() -> None:
    assert import_node(ASCEND, switch_label="rack").spec.topology.switch == "r7"


def test_not_ready_and_cordoned_nodes_keep_their_state() -> None:
    assert import_node(model_node("n1", {}, {"cpu": "1", "memory": "1Gi"}, ready="False")).state is NodeState.NOT_READY
    assert import_node(model_node("n2", {}, {"cpu": "1", "memory": "1Gi"},
                                  unschedulable=True)).state is NodeState.CORDONED
    no_conditions = json_node("n3", {}, {"cpu": "1", "memory": "1Gi"})
    no_conditions["status"]["conditions"] = []
    assert import_node(no_conditions).state is NodeState.NOT_READY


def test_bad_nodes_are_refused_with_a_reason() -> None:
    with pytest.raises(InvalidSpec, match="effect"):
        import_node(json_node("n", {}, {"cpu": "1", "memory": "1Gi"}, taints=[{"key": "k", "effect": "Sometimes"}]))
    with pytest.raises(InvalidSpec, match="whole number"):
        import_node(json_node("n", {}, {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": "1.5"}))
    with pytest.raises(InvalidSpec, match=r"metadata\.name"):
        import_node({"metadata": {}, "status": {}})
