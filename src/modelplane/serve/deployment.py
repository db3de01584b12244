"""From an InferenceDeployment manifest to what runs: the model file, replica commands, gateway config.

The job controller (owned by the control plane) calls these; nothing here talks to the store.
"""

from __future__ import annotations

from pathlib import Path

from modelplane.core.spec import InferenceDeployment
from modelplane.serve.batching import BatchingConfig
from modelplane.serve.gateway import DeploymentConfig
from modelplane.serve.guards.base import GuardPipeline
from modelplane.serve.launch import replica_command
from modelplane.serve.registry import ModelRegistry, ModelVersion


def materialize_model(registry: ModelRegistry, ref: str, cache_dir: str | Path) -> tuple[ModelVersion, Path]:
    """Resolve ``name:7`` / ``name@production`` and copy the ONNX file to a local cache (once per version)."""
    mv = registry.resolve(ref)
    path = Path(cache_dir) / mv.name / str(mv.version) / "model.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(registry.read_bytes(mv))
        tmp.replace(path)
    return mv, path


def replica_argv(manifest: InferenceDeployment, model_path: str | Path, port: int,
                 batching: BatchingConfig | None = None) -> list[str]:
    """The command one replica of this deployment runs (the local backend launches it as a task)."""
    model_name = manifest.metadata.name
    return replica_command(model_name, str(model_path), port, batching or BatchingConfig())


def gateway_config(manifest: InferenceDeployment, guards: GuardPipeline | None = None, *,
                   max_in_flight: int = 64, max_waiting: int = 256) -> DeploymentConfig:
    """Gateway settings for the deployment; replicas serve the model under the deployment's name."""
    name = manifest.metadata.name
    return DeploymentConfig(name=name, model_name=name, max_in_flight=max_in_flight, max_waiting=max_waiting, guards=guards)
