"""The pool page's numbers: allocated + idle = devices, fragmentation only on partly used nodes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modelplane.api.console.pool import pool_by_model
from modelplane.core.node import Node
from modelplane.core.placement import Placement, TaskAssignment
from tests.helpers import gpu_node


def nodes(counts: dict[str, tuple[str, int]]) -> dict[str, Node]:
    return {name: Node.from_spec(gpu_node(name, model=model, count=count)) for name, (model, count) in counts.items()}


def on(node: str, devices: list[int], milli: int = 1000) -> Placement:
    return Placement("j", (TaskAssignment("worker", 0, 0, node, 1000, 1024, tuple(devices), milli),))


def test_models_grouped_by_vendor_with_fragmentation() -> None:
    pool = nodes({"a0": ("NVIDIA-A100", 8), "a1": ("NVIDIA-A100", 8), "m0": ("AMD-MI250", 4)})
    models = pool_by_model(pool, [on("a0", [0, 1, 2]), on("m0", [0, 1, 2, 3]), on("a1", [5], milli=500)])
    assert [(m.vendor, m.model) for m in models] == [("AMD", "AMD-MI250"), ("NVIDIA", "NVIDIA-A100")]
    amd, nvidia = models
    assert (amd.total, amd.allocated, amd.idle, amd.fragmented) == (4, 4, 0, 0)
    assert (nvidia.total, nvidia.allocated, nvidia.idle) == (16, 3.5, 12.5)
    assert nvidia.fragmented == 12.5  # both A100 nodes are partly used


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(1, 8)), max_size=12))
def test_allocated_plus_idle_is_the_pool(jobs: list[tuple[int, int]]) -> None:
    pool = nodes({f"n{i}": ("NVIDIA-A100", 8) for i in range(3)})
    free = {f"n{i}": list(range(8)) for i in range(3)}
    placements = []
    for node_index, want in jobs:
        name = f"n{node_index}"
        take, free[name] = free[name][:want], free[name][want:]
        if take:
            placements.append(on(name, take))
    (model,) = pool_by_model(pool, placements)
    assert model.allocated + model.idle == model.total == 24
    assert 0 <= model.fragmented <= model.idle
