"""Accelerators really present on this machine, found with each vendor's own tool.

Under the local backend the demo pool's devices are virtual; when this machine has real GPUs or NPUs,
``modelplane up`` adds a node for them, and tasks placed there see those devices through the
vendor's visibility variable (CUDA_VISIBLE_DEVICES, HIP_VISIBLE_DEVICES, ASCEND_RT_VISIBLE_DEVICES).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from modelplane.core.node import AcceleratorSpec, NodeSpec


@dataclass(frozen=True)
class DetectedDevices:
    model: str
    count: int
    memory_gib: float | None


def parse_nvidia_smi(text: str) -> DetectedDevices | None:
    """Output of ``nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits``."""
    rows = [[c.strip() for c in line.split(",")] for line in text.strip().splitlines() if line.strip()]
    if not rows:
        return None
    name = rows[0][0]
    model = "NVIDIA-" + name.replace("NVIDIA ", "").replace(" ", "-") if not name.startswith("NVIDIA-") else name
    try:
        mem = round(float(rows[0][1]) / 1024, 1)
    except (IndexError, ValueError):
        mem = None
    return DetectedDevices(model, len(rows), mem)


def parse_rocm_smi(text: str) -> DetectedDevices | None:
    """Output of ``rocm-smi --showproductname --csv``: one row per GPU after the header."""
    lines = [line for line in text.strip().splitlines() if line.strip() and line.lower().startswith("card")]
    if not lines:
        return None
    cols = lines[0].split(",")
    name = next((c for c in cols[1:] if c.strip() and "MI" in c.upper()), cols[-1]).strip()
    return DetectedDevices(f"AMD-{name.replace(' ', '-')}", len(lines), None)


def parse_npu_smi(text: str) -> DetectedDevices | None:
    """Output of ``npu-smi info -l``: 'NPU ID' lines, and 'Chip Name' lines naming the model."""
    ids = [line for line in text.splitlines() if "NPU ID" in line]
    if not ids:
        return None
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if "Chip Name" in line), "910")
    return DetectedDevices(f"Ascend-{name}", len(ids), None)


PROBES: tuple[tuple[str, list[str], Callable[[str], DetectedDevices | None]], ...] = (
    ("nvidia-smi", ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"], parse_nvidia_smi),
    ("rocm-smi", ["rocm-smi", "--showproductname", "--csv"], parse_rocm_smi),
    ("npu-smi", ["npu-smi", "info", "-l"], parse_npu_smi),
)


def detect() -> DetectedDevices | None:
    """The first vendor tool that answers wins; None on a machine without accelerators."""
    for tool, cmd, parse in PROBES:
        if shutil.which(tool) is None:
            continue
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            found = parse(r.stdout)
            if found and found.count:
                return found
    return None


def local_node(found: DetectedDevices) -> NodeSpec:
    cpus = os.cpu_count() or 1
    mem_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    host = socket.gethostname().split(".")[0].lower() or "localhost"
    return NodeSpec.model_validate({
        "name": f"local-{host}",
        "cpu": str(cpus),
        "memory": f"{mem_mib}Mi",
        "accelerators": AcceleratorSpec(model=found.model, count=found.count, memory_gib=found.memory_gib).model_dump(
            by_alias=True, exclude_none=True),
        "labels": {"modelplane.io/real-devices": "true"},
        "topology": {"group": "local", "switch": "local"},
    })
