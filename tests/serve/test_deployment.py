from __future__ import annotations

from pathlib import Path

import yaml

from modelplane.core.spec import InferenceDeployment, parse_manifest
from modelplane.serve.deployment import gateway_config, materialize_model, replica_argv
from modelplane.serve.registry import ModelRegistry


def test_manifest_to_model_file_replica_command_and_gateway(tmp_path: Path, mlp_onnx) -> None:
    reg = ModelRegistry(str(tmp_path / "registry"))
    reg.register("echo", mlp_onnx[1], now=0.0)
    doc = yaml.safe_load(Path("examples/inference-deployment.yaml").read_text())
    manifest = parse_manifest(doc)
    assert isinstance(manifest, InferenceDeployment)
    mv, path = materialize_model(reg, manifest.spec.model, tmp_path / "cache")
    assert mv.ref == "echo:1"
    assert path.read_bytes() == mlp_onnx[1]
    assert materialize_model(reg, "echo@staging", tmp_path / "cache")[1] == path
    argv = replica_argv(manifest, path, 8123)
    assert argv[1:3] == ["-m", "modelplane.serve.replica"] and "8123" in argv
    cfg = gateway_config(manifest)
    assert (cfg.name, cfg.model_name) == ("echo-serve", "echo-serve")
