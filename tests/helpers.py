"""Small builders shared by tests."""

from __future__ import annotations

from typing import Any

from modelplane.core.node import NodeSpec
from modelplane.core.queue import QueueSpec


def training_doc(name: str = "t1", queue: str = "training", replicas: int = 2, command: list[str] | None = None,
                 accelerators: float = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "modelplane/v1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "queue": queue,
            "replicas": replicas,
            "template": {
                "command": command or ["python", "-c", "print('hi')"],
                "resources": {"cpu": "1", "memory": "1Gi", "accelerators": accelerators},
            },
            **spec,
        },
    }


def gpu_node(name: str, model: str = "NVIDIA-A100", count: int = 8, switch: str = "s0", **kw: Any) -> NodeSpec:
    return NodeSpec.model_validate({"name": name, "cpu": "64", "memory": "512Gi",
                                    "accelerators": {"model": model, "count": count},
                                    "topology": {"group": "g0", "switch": switch}, **kw})


def queue(name: str = "training", **kw: Any) -> QueueSpec:
    return QueueSpec.model_validate({"name": name, "kind": "training", "quota": {"*": 1000}, **kw})
