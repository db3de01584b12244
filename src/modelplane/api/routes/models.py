"""The model registry over HTTP: register an ONNX file as a new version, promote it, list versions.

Deployments name models as ``registry://name:7`` or ``name@production``; the deployment controller
resolves them in the same registry (``MODELPLANE_MODEL_REGISTRY_URL``, default ``<home>/models``).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from modelplane.core.errors import InvalidSpec, NotFound
from modelplane.serve.registry import Lineage, ModelRegistry, ModelVersion

router = APIRouter(tags=["models"])
MAX_MODEL_BYTES = 2 << 30  # protobuf's own limit for one ONNX file


def registry_for(request: Request) -> ModelRegistry:
    reg: ModelRegistry | None = getattr(request.app.state, "model_registry", None)
    if reg is None:
        from modelplane.api.routes.lineage import lineage_of
        from modelplane.data.lineage_hooks import ModelLineageHook
        from modelplane.settings import Settings

        # Every registered version lands in the lineage graph with its run, checkpoint and dataset.
        reg = ModelRegistry(Settings().resolved_model_registry_url,
                            lineage_hooks=[ModelLineageHook(lineage_of(request))])
        request.app.state.model_registry = reg
    return reg


def version_view(mv: ModelVersion) -> dict[str, Any]:
    return {"name": mv.name, "version": mv.version, "ref": mv.ref, "stage": mv.stage.value, "uri": mv.uri,
            "createdAt": mv.created_at, "metadata": mv.metadata}


@router.post("/models", status_code=201)
async def register_model(
    request: Request,
    name: Annotated[str, Query(min_length=1, max_length=63, description="model name")],
    stage: Annotated[str | None, Query(description="promote the new version: staging or production")] = None,
    training_run: Annotated[str, Query(alias="trainingRun", max_length=1024,
                                       description="the training job that produced it (lineage)")] = "",
    checkpoint: Annotated[str, Query(max_length=4096, description="the checkpoint it was exported from")] = "",
    dataset: Annotated[str, Query(max_length=4096, description="the dataset it was trained on")] = "",
) -> dict[str, Any]:
    """Register the request body (an ONNX file, ``application/octet-stream``) as the next version.
    A file that fails ``onnx.checker`` is refused (422) and nothing is written."""
    data = await request.body()
    if not data:
        raise InvalidSpec("the request body is empty", hint="send the .onnx file's bytes as the body", field="body")
    if len(data) > MAX_MODEL_BYTES:
        raise InvalidSpec(f"the model is {len(data)} bytes; at most {MAX_MODEL_BYTES} are accepted",
                          hint="store large models in object storage and deploy them by URL", field="body")
    reg = registry_for(request)
    mv = await run_in_threadpool(reg.register, name, data, now=time.time(),
                                 metadata={"bytes": len(data), "content_type": request.headers.get("content-type", "")},
                                 lineage=Lineage(training_run=training_run, checkpoint=checkpoint, dataset=dataset))
    if stage:
        mv = await run_in_threadpool(reg.set_stage, name, mv.version, stage)
    return version_view(mv)


@router.get("/models")
def list_models(request: Request) -> dict[str, Any]:
    """Every model with its newest version and the version in production, if any."""
    reg = registry_for(request)
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in reg.fs.ls(reg.root, detail=False)) \
        if reg.fs.exists(reg.root) else []
    items = []
    for n in names:
        versions = reg.versions(n)
        if not versions:
            continue
        prod = [v for v in versions if v.stage.value == "production"]
        items.append({"name": n, "latest": versions[-1].version, "versions": len(versions),
                      "production": prod[-1].version if prod else None})
    return {"items": items}


@router.get("/models/{name}")
def get_model(name: str, request: Request) -> dict[str, Any]:
    versions = registry_for(request).versions(name)
    if not versions:
        raise NotFound(f"model {name!r} has no versions", hint="register one with 'modelplane models register'")
    return {"name": name, "items": [version_view(v) for v in versions]}


@router.post("/models/{name}/versions/{version}/stage")
def set_stage(name: str, version: int, request: Request,
              stage: Annotated[str, Query(description="staging, production or archived")]) -> dict[str, Any]:
    """Promoting a version to production archives the previous production version."""
    return version_view(registry_for(request).set_stage(name, version, stage))
