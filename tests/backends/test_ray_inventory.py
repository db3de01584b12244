"""Ray's node inventory (the dicts `ray.nodes()` returns) as NodeSpecs, and Ray-free backend parts."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelplane.backends.base import BackendError, create_backend
from modelplane.backends.ray import import_ray, placement_strategy
from modelplane.backends.ray_inventory import node_name, node_spec, node_specs
from modelplane.core.accelerators import family_of_model
from modelplane.core.errors import InvalidSpec
from modelplane.core.node import Node


def ray_node(node_id: str, resources: dict[str, float], labels: dict[str, str] | None = None,
             alive: bool = True, ip: str = "10.0.0.5") -> dict[str, Any]:
    """The shape of one entry of ray.nodes() (Ray 2.x), as read from a live cluster."""
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": ip, "NodeManagerHostname": "host",
            "Resources": {**resources, f"node:{ip}": 1.0},
            "Labels": {"ray.io/node-id": node_id, **(labels or {})}}


GPU_NODE = ray_node("a" * 56, {"CPU": 32.0, "GPU": 4.0, "memory": 64 * 2**30, "object_store_memory": 2**30,
                                "accelerator_type:A100": 1.0, "rack_7": 1.0},
                    {"modelplane.io/node-name": "a100-0", "ray.io/availability-zone": "us-1a",
                     "modelplane.io/topology-switch": "leaf-2"})
NPU_NODE = ray_node("b" * 56, {"CPU": 8.0, "NPU": 8.0, "memory": 2**34, "accelerator_type:Ascend910B": 1.0})
CPU_NODE = ray_node("c" * 56, {"CPU": 2.0, "memory": 2**33}, ip="10.0.0.6")


def test_gpu_node_resources_labels_and_topology() -> None:
    spec = node_spec(GPU_NODE)
    assert spec.name == "a100-0"
    assert spec.accelerators is not None and (spec.accelerators.model, spec.accelerators.count) == ("A100", 4)
    assert spec.cpu == "32000m" and spec.memory == f"{64 * 1024}Mi"
    assert spec.topology.group == "us-1a" and spec.topology.switch == "leaf-2"
    assert spec.labels["resources.ray.io/rack_7"] == "1"
    assert spec.labels["modelplane.io/ray-node-id"] == "a" * 56
    assert not any(k.startswith("resources.ray.io/node:") for k in spec.labels)
    node = Node.from_spec(spec)
    assert node.family is not None and node.family.name == "nvidia" and node.gpu_count == 4


def test_npu_and_cpu_nodes() -> None:
    npu = node_spec(NPU_NODE)
    assert npu.accelerators is not None and npu.accelerators.model == "Ascend910B"
    assert family_of_model(npu.accelerators.model).name == "ascend"
    cpu = node_spec(CPU_NODE)
    assert cpu.accelerators is None and cpu.name == "ray-10.0.0.6-cccccccc"


def test_only_alive_nodes_sorted_and_unique_names() -> None:
    dead = ray_node("d" * 56, {"CPU": 1.0, "memory": 2**30}, alive=False)
    assert [s.name for s in node_specs([NPU_NODE, dead, GPU_NODE, CPU_NODE])] == [
        "a100-0", "ray-10.0.0.5-bbbbbbbb", "ray-10.0.0.6-cccccccc"]
    twin = ray_node("e" * 56, {"CPU": 1.0, "memory": 2**30}, {"modelplane.io/node-name": "a100-0"})
    with pytest.raises(InvalidSpec, match="a100-0"):
        node_specs([GPU_NODE, twin])


def test_device_key_must_fit_the_accelerator_family() -> None:
    wrong = ray_node("f" * 56, {"CPU": 1.0, "GPU": 2.0, "memory": 2**30, "accelerator_type:Ascend910B": 1.0})
    with pytest.raises(InvalidSpec, match="NPU"):
        node_spec(wrong)


@given(st.text(alphabet="0123456789abcdef", min_size=56, max_size=56),
       st.ip_addresses(v=4).map(str))
def test_derived_names_are_valid_node_names(node_id: str, ip: str) -> None:
    spec = node_spec(ray_node(node_id, {"CPU": 1.0, "memory": 2**30}, ip=ip))
    assert spec.name == node_name(ray_node(node_id, {}, ip=ip)) and node_id[:8] in spec.name


@pytest.mark.parametrize(("nodes", "strategy"), [
    (["a", "a", "a"], "STRICT_PACK"), (["a", "b", "c"], "STRICT_SPREAD"), (["a", "a", "b"], "PACK"),
    (["a"], "STRICT_PACK")])
def test_placement_strategy_says_what_the_placement_demands(nodes: list[str], strategy: str) -> None:
    assert placement_strategy(nodes) == strategy


def test_missing_ray_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(BackendError) as err:
        import_ray()
    assert "pip install 'modelplane[ray]'" in (err.value.hint or "")


def test_backends_are_found_by_name(tmp_path: Any) -> None:
    assert create_backend("ray", state_dir=tmp_path, address="127.0.0.1:1").name == "ray"  # connects lazily
    assert create_backend("kubernetes", state_dir=tmp_path, api_client=object()).name == "kubernetes"
