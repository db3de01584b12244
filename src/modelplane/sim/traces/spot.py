"""alibaba-spot-gpu-2026 (GFS, ASPLOS'26): node list of a modern heterogeneous GPU pool."""

from __future__ import annotations

from pathlib import Path

from modelplane.core.node import Node
from modelplane.core.topology import TopologyPath
from modelplane.sim.traces import read_rows, to_int, trace_root

FOLDER = "alibaba-spot-gpu-2026"
MEMORY_MIB_PER_CPU = 8192  # the list gives no memory; 8 GiB per vCPU is typical of GPU servers


def load_spot_nodes(root: str | Path | None = None, nodes_per_switch: int = 32) -> list[Node]:
    path = trace_root(root) / FOLDER / "node_info_df.csv"
    out = []
    for k, rec in enumerate(read_rows(path, ("node_name", "gpu_model", "gpu_capacity_num", "cpu_num"))):
        cpus = to_int(rec, "cpu_num", path)
        g = to_int(rec, "gpu_capacity_num", path, 0)
        model = rec["gpu_model"] or None
        out.append(Node(
            name=f"spot-{rec['node_name']}",
            cpu_milli=cpus * 1000,
            memory_mib=cpus * MEMORY_MIB_PER_CPU,
            gpu_model=model if g else None,
            gpu_count=g,
            topology=TopologyPath(group=model or "cpu", switch=f"{model or 'cpu'}-{k // nodes_per_switch}"),
        ))
    return out
