"""From an InferenceDeployment manifest to what runs: the model file, replica commands, gateway config,
and the revision a manifest stands for.

The deployment controller (owned by the control plane) calls these; nothing here talks to the store.

Revisions: ``modelplane apply`` of a changed deployment stores the manifest with three annotations
(``REVISION_ANNOTATIONS``): the revision number, a hash of what a replica runs (the spec without
the fields applied in place, plus the model version a registry reference resolved to when it was
applied), and that version. A new hash is a new revision, rolled out replica by replica; a change
of replicas, autoscaling, guards or strategy keeps the hash and applies in place.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelplane.core.spec import GuardsSpec, InferenceDeployment, parse_manifest
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
REVISION_ANNOTATION = "modelplane.io/revision"
REVISION_HASH_ANNOTATION = "modelplane.io/revision-hash"
MODEL_REF_ANNOTATION = "modelplane.io/model-ref"
REVISION_ANNOTATIONS = (REVISION_ANNOTATION, REVISION_HASH_ANNOTATION, MODEL_REF_ANNOTATION)
# Spec fields that change how many replicas run or what the gateway does, not what a replica runs.
IN_PLACE_FIELDS = frozenset({"replicas", "autoscaling", "guards", "strategy"})


@dataclass(frozen=True)
class Revision:
    """What a stored deployment manifest says its replicas run: number, hash, and the model to load
    (the version pinned at apply time, else ``spec.model`` as written)."""

    number: int
    hash: str
    model: str


def revision_hash(manifest: InferenceDeployment, model_ref: str | None) -> str:
    """A short hash of what one replica runs. Computed on the validated spec, so writing a default
    out (``env: {}``) is no change; the fields applied in place are left out, and the model counts
    by the version it resolved to (``digits@production`` and ``digits:2`` are the same model while
    version 2 is in production)."""
    spec = manifest.spec.model_dump(mode="json", by_alias=True, exclude=set(IN_PLACE_FIELDS) | {"model"})
    ident = {"spec": spec, "model": model_ref or manifest.spec.model}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]


def user_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """The manifest as the user applied it: the revision annotations taken out (and the annotations
    mapping too when nothing else is in it), so applying it again compares equal."""
    out = copy.deepcopy(doc)
    meta = out.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("annotations"), dict):
        notes = {k: v for k, v in meta["annotations"].items() if k not in REVISION_ANNOTATIONS}
        if notes:
            meta["annotations"] = notes
        else:
            meta.pop("annotations")
    return out


def with_revision(doc: dict[str, Any], number: int, digest: str, model_ref: str | None) -> dict[str, Any]:
    """The manifest to store: the user's, annotated with its revision (and pinned model version)."""
    out = user_doc(doc)
    notes = out.setdefault("metadata", {}).setdefault("annotations", {})
    notes[REVISION_ANNOTATION] = str(number)
    notes[REVISION_HASH_ANNOTATION] = digest
    if model_ref:
        notes[MODEL_REF_ANNOTATION] = model_ref
    return out


def revision_of(doc: dict[str, Any]) -> Revision:
    """The revision a stored manifest carries; a manifest stored before revisions existed is
    revision 1 with its hash computed now."""
    manifest = parse_manifest(doc)
    assert isinstance(manifest, InferenceDeployment)
    notes = manifest.metadata.annotations
    pinned = notes.get(MODEL_REF_ANNOTATION) or None
    number = int(notes[REVISION_ANNOTATION]) if notes.get(REVISION_ANNOTATION, "").isdigit() else 1
    digest = notes.get(REVISION_HASH_ANNOTATION) or revision_hash(manifest, pinned)
    return Revision(number, digest, pinned or manifest.spec.model)


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
    ``--model-path``, and the port comes from ``$MODELPLANE_PORT``: chosen at launch, or 0 where the
    backend lets tasks pick their own (Ray), the bound port then reported through
    ``$MODELPLANE_ADDRESS_FILE``. A command that is not the replica runtime is run as written (a
    custom server must bind ``$MODELPLANE_PORT`` and, when it is 0, write ``{"port": N}`` there).
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
