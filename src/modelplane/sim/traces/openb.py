"""alibaba-openb-2023 (FGD, ATC'23): the 1,523-node heterogeneous GPU cluster and its pod lists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from modelplane.core.node import Node
from modelplane.core.workload import TaskRequest
from modelplane.sim.traces import read_rows, to_int, trace_root

FOLDER = "alibaba-openb-2023"
DEFAULT_NODE_LIST = "openb_node_list_all_node.csv"


@dataclass(frozen=True)
class OpenbPod:
    name: str
    request: TaskRequest
    creation_time: int | None = None
    deletion_time: int | None = None


def openb_path(name: str, root: str | Path | None = None) -> Path:
    if not name.endswith(".csv"):
        name = f"{name}.csv"
    if not name.startswith("openb_"):
        name = f"openb_pod_list_{name}"
    return trace_root(root) / FOLDER / name


def load_openb_nodes(name: str = DEFAULT_NODE_LIST, root: str | Path | None = None) -> list[Node]:
    path = openb_path(name, root)
    nodes = []
    for rec in read_rows(path, ("sn", "cpu_milli", "memory_mib", "gpu", "model")):
        gpus = to_int(rec, "gpu", path, 0)
        nodes.append(
            Node(
                name=rec["sn"],
                cpu_milli=to_int(rec, "cpu_milli", path),
                memory_mib=to_int(rec, "memory_mib", path),
                gpu_model=(rec["model"] or None) if gpus else None,
                gpu_count=gpus,
            )
        )
    return nodes


def load_openb_pods(name: str = "default", root: str | Path | None = None) -> list[OpenbPod]:
    """A pod list by short name ('default', 'gpuspec33', ...) or file name."""
    path = openb_path(name, root)
    pods = []
    for rec in read_rows(path, ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")):
        count = to_int(rec, "num_gpu", path, 0)
        milli = to_int(rec, "gpu_milli", path, 0) if count else 0
        spec = rec.get("gpu_spec", "")
        models = tuple(m for m in spec.split("|") if m) if spec else ()
        created = rec.get("creation_time", "")
        deleted = rec.get("deletion_time", "")
        pods.append(
            OpenbPod(
                name=rec["name"],
                request=TaskRequest(
                    cpu_milli=to_int(rec, "cpu_milli", path),
                    memory_mib=to_int(rec, "memory_mib", path),
                    gpu_count=count,
                    gpu_milli=milli,
                    gpu_models=models,
                ),
                creation_time=int(float(created)) if created else None,
                deletion_time=int(float(deleted)) if deleted else None,
            )
        )
    return pods
