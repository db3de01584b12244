from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from modelplane.core.errors import Conflict, InvalidSpec
from modelplane.serve.errors import ModelNotFound, ModelValidationFailed
from modelplane.serve.export import export_torch, validate_onnx
from modelplane.serve.registry import Lineage, ModelRegistry, ModelVersion, Stage
from modelplane.serve.runtime import OnnxModel


def test_export_matches_source_model_on_other_batch_sizes(mlp_onnx) -> None:
    module, data, _ = mlp_onnx
    model = OnnxModel(data)
    for n in (1, 3, 17):
        x = np.random.default_rng(n).standard_normal((n, 8)).astype(np.float32)
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(model.run(x), want, rtol=1e-4, atol=1e-5)


def test_export_rejects_a_model_whose_onnx_output_differs() -> None:
    class Drifting(torch.nn.Module):
        """Different outputs in eager mode than in the traced graph: the comparison must catch it."""

        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return x * float(self.calls)

    with pytest.raises(ModelValidationFailed, match="differ"):
        export_torch(Drifting(), torch.zeros(2, 3))


def test_validate_rejects_garbage_with_checker_message() -> None:
    with pytest.raises(ModelValidationFailed) as exc:
        validate_onnx(b"not a model")
    assert "failed validation" in exc.value.message


def test_register_rejects_invalid_graph(tmp_path, mlp_onnx) -> None:
    proto = onnx.load_from_string(mlp_onnx[1])
    proto.graph.node[0].input[0] = "no_such_tensor"
    reg = ModelRegistry(str(tmp_path / "models"))
    with pytest.raises(ModelValidationFailed, match="no_such_tensor"):
        reg.register("mlp", proto.SerializeToString(), now=1.0)
    assert reg.versions("mlp") == []


def test_versions_stages_and_lineage_hook(tmp_path, mlp_onnx) -> None:
    seen: list[ModelVersion] = []
    reg = ModelRegistry(f"file://{tmp_path}/models", lineage_hooks=[seen.append])
    lin = Lineage(training_run="run-42", checkpoint="s3://ckpt/run-42/step-1000")
    v1 = reg.register("mlp", mlp_onnx[1], now=10.0, metadata={"framework": "torch"}, lineage=lin)
    v2 = reg.register("mlp", mlp_onnx[1], now=20.0)
    assert (v1.version, v2.version) == (1, 2)
    assert v1.stage is Stage.STAGING
    assert [m.ref for m in seen] == ["mlp:1", "mlp:2"]
    assert seen[0].lineage.checkpoint == "s3://ckpt/run-42/step-1000"

    reg.set_stage("mlp", 1, "production")
    assert reg.resolve("mlp@production").version == 1
    reg.set_stage("mlp", 2, Stage.PRODUCTION)
    assert reg.resolve("mlp@production").version == 2
    assert reg.get("mlp", 1).stage is Stage.ARCHIVED
    with pytest.raises(Conflict):
        reg.set_stage("mlp", 1, "production")
    assert reg.resolve("mlp").version == 2
    assert reg.resolve("mlp:1").metadata == {"framework": "torch"}
    assert reg.read_bytes(reg.get("mlp", 1)) == mlp_onnx[1]
    # A fresh registry over the same storage sees the same state.
    again = ModelRegistry(str(tmp_path / "models"))
    assert [v.stage for v in again.versions("mlp")] == [Stage.ARCHIVED, Stage.PRODUCTION]


def test_registry_errors_name_the_problem(tmp_path) -> None:
    reg = ModelRegistry(str(tmp_path))
    with pytest.raises(InvalidSpec, match="invalid model name"):
        reg.versions("Bad Name")
    with pytest.raises(ModelNotFound):
        reg.resolve("absent")
    with pytest.raises(ModelNotFound):
        reg.resolve("absent@production")
    with pytest.raises(InvalidSpec, match="stage"):
        reg.resolve("absent@live")
