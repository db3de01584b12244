"""From an InferenceDeployment manifest to what runs: the model file, replica commands, gateway config.

The deployment controller (owned by the control plane) calls these; nothing here talks to the store.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from modelplane.core.spec import GuardsSpec, InferenceDeployment
from modelplane.serve._deps import require
from modelplane.serve.batching import BatchingConfig
from modelplane.serve.errors import ModelNotFound
from modelplane.serve.gateway import DeploymentConfig
from modelplane.serve.guards.base import Action, DecisionCallback, Guard, GuardPipeline
from modelplane.serve.launch import replica_command
from modelplane.serve.registry import ModelRegistry, ModelVersion

if TYPE_CHECKING:
    from modelplane.serve.guards.injection import InjectionClassifier

REPLICA_MODULE = "modelplane.serve.replica"


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


def is_file_ref(ref: str) -> bool:
    """A path or fsspec URL to an ``.onnx`` file, as opposed to a registry reference."""
    return not ref.startswith("registry://") and (ref.endswith(".onnx") or "/" in ref)


def materialize_ref(ref: str, registry: ModelRegistry | None, cache_dir: str | Path) -> tuple[str, Path]:
    """Any model reference a manifest may hold -> (resolved reference, local ONNX path).

    Registry references resolve to a version (``name@production`` -> ``name:3``); a path or fsspec URL
    (``s3://bucket/m.onnx``) is copied into the cache under a hash of the URL, so replicas on this host
    read a local file and a later change of the source needs a new deployment to take effect.
    """
    if not is_file_ref(ref):
        if registry is None:
            raise ModelNotFound(f"model {ref!r} names the registry, but no registry is configured",
                                hint="set MODELPLANE_MODEL_REGISTRY_URL, or give a path to an .onnx file")
        mv, path = materialize_model(registry, ref, cache_dir)
        return mv.ref, path
    fsspec = require("fsspec", extra="data")

    path = Path(cache_dir) / "files" / hashlib.sha256(ref.encode()).hexdigest()[:16] / "model.onnx"
    if not path.exists():
        try:
            with fsspec.open(ref, "rb") as f:
                data = f.read()
        except (FileNotFoundError, OSError) as exc:
            raise ModelNotFound(f"model file {ref!r} cannot be read: {exc}",
                                hint="check spec.model (relative paths are from the controller's working "
                                     "directory), or register the model and use registry://NAME:VERSION") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return ref, path


def replica_argv(manifest: InferenceDeployment, model_path: str | Path, port: int,
                 batching: BatchingConfig | None = None) -> list[str]:
    """The command one replica of this deployment runs (the local backend launches it as a task)."""
    model_name = manifest.metadata.name
    return replica_command(model_name, str(model_path), port, batching or BatchingConfig())


def replica_task_command(manifest: InferenceDeployment, model_path: str | Path) -> list[str]:
    """The command of a replica job: the manifest's serving command plus the model to serve.

    ``spec.template.command`` names the serving runtime and its tuning flags (``python -m
    modelplane.serve.replica --max-batch-size 16``); the controller adds ``--model-name`` and
    ``--model-path``, and the port comes from ``$MODELPLANE_PORT``, chosen at launch. A command that
    is not the replica runtime is run as written (a custom server must read ``$MODELPLANE_PORT``).
    """
    cmd = list(manifest.spec.template.command)
    if REPLICA_MODULE in cmd and "--model-path" not in cmd:
        cmd += ["--model-name", manifest.metadata.name, "--model-path", str(model_path)]
    return cmd


def gateway_config(manifest: InferenceDeployment, *, max_in_flight: int = 64, max_waiting: int = 256,
                   callbacks: list[DecisionCallback] | None = None) -> DeploymentConfig:
    """Gateway settings for the deployment (replicas serve the model under the deployment's name),
    with the guards its ``spec.guards`` asks for; ``callbacks`` receive every guard decision (the
    API records the ones that change a request in the audit log)."""
    name = manifest.metadata.name
    return DeploymentConfig(name=name, model_name=name, max_in_flight=max_in_flight, max_waiting=max_waiting,
                            guards=build_guards(manifest.spec.guards, callbacks or []))


def build_guards(spec: GuardsSpec | None, callbacks: list[DecisionCallback]) -> GuardPipeline | None:
    if spec is None or not (spec.input or spec.output):
        return None
    input_guards: list[Guard] = []
    output_guards: list[Guard] = []
    if "injection" in spec.input:
        from modelplane.serve.guards.injection import InjectionFilter

        input_guards.append(InjectionFilter(_injection_classifier()))
    if "pii" in spec.output:
        from modelplane.serve.guards.pii import PiiMonitor

        output_guards.append(PiiMonitor(engine=spec.pii_engine, deny_list=tuple(spec.deny_list),
                                        action=Action(spec.pii_action)))
    return GuardPipeline(input_guards, output_guards, list(callbacks))


@functools.cache
def _injection_classifier() -> InjectionClassifier:
    """Loaded once per process (about a second): every deployment shares the same read-only model."""
    from modelplane.serve.guards.injection import InjectionClassifier

    return InjectionClassifier.load()
