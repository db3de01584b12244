"""Detection of real accelerators from each vendor tool's output."""

from modelplane.backends.local_devices import (
    DetectedDevices,
    detect,
    local_node,
    parse_npu_smi,
    parse_nvidia_smi,
    parse_rocm_smi,
)
from modelplane.core.node import Node


def test_nvidia_smi():
    out = "NVIDIA H100 80GB HBM3, 81559\nNVIDIA H100 80GB HBM3, 81559\n"
    assert parse_nvidia_smi(out) == DetectedDevices("NVIDIA-H100-80GB-HBM3", 2, 79.6)
    assert parse_nvidia_smi("") is None


def test_rocm_smi():
    out = "device,Card series,Card model\ncard0,AMD Instinct MI250X,0x740c\ncard1,AMD Instinct MI250X,0x740c\n"
    found = parse_rocm_smi(out)
    assert found is not None and found.count == 2 and "MI250X" in found.model and found.model.startswith("AMD-")


def test_npu_smi():
    out = "Total Count : 2\n  NPU ID : 0\n  Chip Name : 910B\n  NPU ID : 1\n  Chip Name : 910B\n"
    assert parse_npu_smi(out) == DetectedDevices("Ascend-910B", 2, None)


def test_detected_devices_become_a_schedulable_node():
    node = Node.from_spec(local_node(DetectedDevices("NVIDIA-H100", 1, 80.0)))
    assert node.gpu_count == 1 and node.family is not None and node.family.name == "nvidia"
    assert node.labels["modelplane.io/real-devices"] == "true"


def test_detect_on_this_machine_matches_its_tools():
    import shutil

    found = detect()
    if not any(shutil.which(t) for t in ("nvidia-smi", "rocm-smi", "npu-smi")):
        assert found is None
    else:
        assert found is None or found.count >= 1
