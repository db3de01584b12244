"""A cluster file: the nodes and queues of a pool, in one YAML document (``kind: Cluster``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelplane.core.errors import InvalidSpec
from modelplane.core.node import NodeSpec
from modelplane.core.queue import QueueSpec
from modelplane.core.spec import API_VERSION, invalid_spec_from


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nodes: list[NodeSpec] = Field(default_factory=list)
    queues: list[QueueSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ClusterSpec:
        for what, names in (("node", [n.name for n in self.nodes]), ("queue", [q.name for q in self.queues])):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"duplicate {what} name(s): {', '.join(dup)}")
        return self


class ClusterManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    api_version: Literal["modelplane/v1"] = Field(alias="apiVersion")
    kind: Literal["Cluster"]
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ClusterSpec


def parse_cluster(doc: Any) -> ClusterManifest:
    if not isinstance(doc, Mapping):
        raise InvalidSpec("a cluster file must be a mapping", hint="see examples/cluster.yaml", field="(document)")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "Cluster":
        raise InvalidSpec(
            f"expected apiVersion {API_VERSION} and kind Cluster, got {doc.get('apiVersion')!r} / {doc.get('kind')!r}",
            hint="start the file with 'apiVersion: modelplane/v1' and 'kind: Cluster'",
            field="kind",
        )
    try:
        return ClusterManifest.model_validate(dict(doc))
    except ValidationError as exc:
        raise invalid_spec_from(exc) from None
