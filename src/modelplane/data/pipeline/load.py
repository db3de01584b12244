"""Read a pipeline definition from YAML (a bare definition or a ``kind: Pipeline`` manifest) or
from ``$MODELPLANE_PIPELINE_SPEC`` (how a Pipeline job's default task receives it)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from modelplane.data.errors import DataError
from modelplane.data.pipeline.spec import PipelineDef

SPEC_ENV = "MODELPLANE_PIPELINE_SPEC"


def from_mapping(data: Any, where: str = "pipeline") -> PipelineDef:
    if not isinstance(data, dict):
        raise DataError(f"{where}: a pipeline is a mapping (name, sources, transforms, sinks, deadLetter).",
                        hint="See examples/pipeline.yaml.")
    prefix = ""
    if data.get("kind") == "Pipeline":
        spec = data.get("spec") or {}
        body = dict(spec.get("pipeline") or {})
        if not body:
            raise DataError(f"{where}: spec.pipeline is empty.", field="spec.pipeline",
                            hint="Put the pipeline definition (sources, sinks, deadLetter) under spec.pipeline.")
        body.setdefault("name", (data.get("metadata") or {}).get("name", ""))
        data, prefix = body, "spec.pipeline."
    try:
        return PipelineDef.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = prefix + ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "tagged-union")))
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise DataError(f"{where}: {loc}: {e['msg']}{more}", field=loc,
                        hint="Fix that field; data/README.md documents every field.") from None


def from_file(path: str | os.PathLike[str]) -> PipelineDef:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise DataError(f"{p} does not exist.", field="spec", hint="Give the path of a pipeline YAML file.") from None
    except yaml.YAMLError as exc:
        raise DataError(f"{p} is not valid YAML: {exc}", field="spec") from None
    return from_mapping(data, str(p))


def from_env() -> PipelineDef:
    raw = os.environ.get(SPEC_ENV)
    if not raw:
        raise DataError(f"${SPEC_ENV} is not set.", field=SPEC_ENV,
                        hint="A Pipeline job's default task sets it from spec.pipeline; or pass a SPEC.yaml path.")
    try:
        data = json.loads(raw)
        if isinstance(data, dict) and "name" not in data and os.environ.get("MODELPLANE_JOB_NAME"):
            data["name"] = os.environ["MODELPLANE_JOB_NAME"]  # the manifest's metadata.name
        return from_mapping(data, f"${SPEC_ENV}")
    except json.JSONDecodeError as exc:
        raise DataError(f"${SPEC_ENV} is not JSON: {exc}", field=SPEC_ENV) from None
