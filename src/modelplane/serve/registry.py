"""Model registry: ONNX model versions with metadata, stage and lineage, stored through fsspec.

Layout under the root URL (a local path in tests, ``s3://bucket/models`` in production)::

    {root}/{name}/{version}/model.onnx
    {root}/{name}/{version}/meta.json

Versions are integers from 1. A model file is validated with onnx.checker before anything is
written, so a broken model never becomes a version. Stages follow MLflow's: a version is born in
``staging``; promoting one to ``production`` archives the previous production version.
Lineage (training run, checkpoint, dataset) is stored with the version and handed to every
registered hook, so the data-lineage graph can record the edge model <- checkpoint <- run.
Writers are the API and jobs that register what they trained (a federation's server): a version
number is claimed by creating its directory exclusively (atomic on a filesystem; object stores have
no directories, so there two concurrent writers of one model may still race), and a version whose
meta.json is not written yet is not listed.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from modelplane.core.errors import Conflict, InvalidSpec
from modelplane.serve._deps import require
from modelplane.serve.errors import ModelNotFound
from modelplane.serve.export import validate_onnx

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$")


class Stage(StrEnum):
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"


@dataclass(frozen=True)
class Lineage:
    """Where a model came from; all optional so hand-made models register too."""

    training_run: str = ""
    checkpoint: str = ""
    dataset: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    stage: Stage
    uri: str
    created_at: float
    metadata: dict[str, Any]
    lineage: Lineage

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_json(self) -> str:
        d = asdict(self)
        d["stage"] = self.stage.value
        return json.dumps(d, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ModelVersion:
        d = json.loads(text)
        d["stage"] = Stage(d["stage"])
        d["lineage"] = Lineage(**d["lineage"])
        return cls(**d)


LineageHook = Callable[[ModelVersion], object]  # what a hook returns is ignored


class ModelRegistry:
    """Model versions in an fsspec filesystem. Time is passed in (``now``) by the caller."""

    def __init__(self, root_url: str, *, lineage_hooks: list[LineageHook] | None = None, **storage_options: Any) -> None:
        fsspec = require("fsspec", extra="data")
        self.fs, self.root = fsspec.core.url_to_fs(root_url, **storage_options)
        self.protocol = root_url.split("://", 1)[0] if "://" in root_url else "file"
        self.lineage_hooks: list[LineageHook] = list(lineage_hooks or [])

    def _dir(self, name: str, version: int) -> str:
        return posixpath.join(self.root, name, str(version))

    def _check_name(self, name: str) -> None:
        if not _NAME.match(name):
            raise InvalidSpec(
                f"invalid model name {name!r}",
                hint="use lowercase letters, digits, '-', '_' or '.', 1-63 characters, starting and ending alphanumeric",
                field="name",
            )

    def versions(self, name: str) -> list[ModelVersion]:
        """All versions of ``name``, oldest first."""
        self._check_name(name)
        out = []
        for n in self._numbers(name):
            try:
                out.append(self.get(name, n))
            except ModelNotFound:
                continue  # being written by another writer: listed once its meta.json is there
        return out

    def _numbers(self, name: str) -> list[int]:
        base = posixpath.join(self.root, name)
        if not self.fs.exists(base):
            return []
        return sorted(int(posixpath.basename(p.rstrip("/"))) for p in self.fs.ls(base, detail=False)
                      if posixpath.basename(p.rstrip("/")).isdigit())

    def get(self, name: str, version: int) -> ModelVersion:
        self._check_name(name)
        path = posixpath.join(self._dir(name, version), "meta.json")
        try:
            with self.fs.open(path, "r") as f:
                return ModelVersion.from_json(f.read())
        except FileNotFoundError as exc:
            raise ModelNotFound(f"model {name}:{version} not found", hint="list versions with ModelRegistry.versions(name)") from exc

    def register(
        self,
        name: str,
        model_bytes: bytes,
        *,
        now: float,
        metadata: dict[str, Any] | None = None,
        lineage: Lineage | None = None,
    ) -> ModelVersion:
        """Validate the ONNX bytes, store them as the next version (stage ``staging``), run lineage hooks."""
        self._check_name(name)
        validate_onnx(model_bytes)
        for _ in range(100):
            taken = self._numbers(name)
            version = taken[-1] + 1 if taken else 1
            d = self._dir(name, version)
            try:
                self.fs.makedirs(d, exist_ok=False)
                break
            except FileExistsError:
                continue  # another writer claimed this number first: take the next
        else:
            raise Conflict(f"could not claim a version number for model {name}", hint="retry the registration")
        uri = posixpath.join(d, "model.onnx")
        with self.fs.open(uri, "wb") as f:
            f.write(model_bytes)
        mv = ModelVersion(name, version, Stage.STAGING, self._url(uri), now, dict(metadata or {}), lineage or Lineage())
        self._write_meta(mv)
        for hook in self.lineage_hooks:
            hook(mv)
        return mv

    def _url(self, path: str) -> str:
        return path if self.protocol == "file" else f"{self.protocol}://{path}"

    def _write_meta(self, mv: ModelVersion) -> None:
        with self.fs.open(posixpath.join(self._dir(mv.name, mv.version), "meta.json"), "w") as f:
            f.write(mv.to_json())

    def set_stage(self, name: str, version: int, stage: Stage | str) -> ModelVersion:
        """Move a version to ``stage``; promoting to production archives the previous production version."""
        try:
            target = Stage(stage)
        except ValueError as exc:
            raise InvalidSpec(f"unknown stage {stage!r}", hint=f"use one of {[s.value for s in Stage]}", field="stage") from exc
        mv = self.get(name, version)
        if mv.stage is Stage.ARCHIVED and target is Stage.PRODUCTION:
            raise Conflict(f"{mv.ref} is archived", hint="move it to staging first, then promote it")
        if target is Stage.PRODUCTION:
            for other in self.versions(name):
                if other.stage is Stage.PRODUCTION and other.version != version:
                    self._write_meta(replace(other, stage=Stage.ARCHIVED))
        updated = replace(mv, stage=target)
        self._write_meta(updated)
        return updated

    def resolve(self, ref: str) -> ModelVersion:
        """``name:7`` (a version), ``name@production`` / ``name@staging`` (newest in that stage), or ``name`` (latest).

        A ``registry://`` prefix, as manifests write it, is accepted.
        """
        ref = ref.removeprefix("registry://")
        if "@" in ref:
            name, stage_s = ref.split("@", 1)
            stage = Stage(stage_s) if stage_s in {s.value for s in Stage} else None
            if stage is None:
                raise InvalidSpec(f"unknown stage in {ref!r}", hint="use name@production or name@staging", field="model")
            found = [v for v in self.versions(name) if v.stage is stage]
            if not found:
                raise ModelNotFound(f"model {name} has no version in {stage.value}", hint=f"promote one with set_stage({name!r}, N, {stage.value!r})")
            return found[-1]
        if ":" in ref:
            name, ver = ref.split(":", 1)
            if not ver.isdigit():
                raise InvalidSpec(f"version in {ref!r} is not a number", hint="use name:1", field="model")
            return self.get(name, int(ver))
        found = self.versions(ref)
        if not found:
            raise ModelNotFound(f"model {ref} has no versions", hint="register one with ModelRegistry.register")
        return found[-1]

    def read_bytes(self, mv: ModelVersion) -> bytes:
        with self.fs.open(posixpath.join(self._dir(mv.name, mv.version), "model.onnx"), "rb") as f:
            data: bytes = f.read()
        return data
