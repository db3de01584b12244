from __future__ import annotations

import pytest


def _mlp(seed: int = 0):  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, bytes, str]:
    """A small MLP, its ONNX export (bytes) and the file it was written to."""
    import torch

    from modelplane.serve.export import export_torch

    module = _mlp()
    report = export_torch(module, torch.zeros(2, 8))
    path = tmp_path_factory.mktemp("model") / "mlp.onnx"
    path.write_bytes(report.onnx_bytes)
    return module, report.onnx_bytes, str(path)
