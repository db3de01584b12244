"""Named transforms a pipeline picks in YAML (``{op: NAME, ...params}``): a small typed registry.

Record transforms are plain functions ``record -> record | None`` (None: filtered out on purpose,
counted) that raise :class:`RecordError` for a record they cannot process (it is dead-lettered with
the rule). The runner fuses consecutive record transforms into one Beam ``ParDo``. ``join`` and
``union`` combine several sources and are applied by the runner (``combine.py``); ``normalize``
without given statistics needs one pass over the data and is expanded by the runner too.
Filters are structured conditions, never ``eval``.
"""

from __future__ import annotations

import operator
import re
import zlib
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelplane.data.errors import DataError
from modelplane.data.pipeline.schema import Record, RecordError

RecordFn = Callable[[Record], Record | None]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    op: str


class Transform:
    """One entry of the registry: its parameter model and what it builds."""

    name: ClassVar[str]
    params_model: ClassVar[type[Params]]
    combines_sources: ClassVar[bool] = False

    def __init__(self, params: Params) -> None:
        self.params = params

    def record_fn(self) -> RecordFn | None:
        """The per-record function, or None when the runner must expand this step itself."""
        raise NotImplementedError


REGISTRY: dict[str, type[Transform]] = {}


def register(cls: type[Transform]) -> type[Transform]:
    REGISTRY[cls.name] = cls
    return cls


def parse(steps: list[dict[str, Any]]) -> list[Transform]:
    """Typed transforms from the YAML list; errors name ``transforms.N.field``."""
    out = []
    for i, raw in enumerate(steps):
        if not isinstance(raw, dict) or "op" not in raw:
            raise DataError(f"transforms.{i}: each step is a mapping with an 'op' key.", field=f"transforms.{i}.op",
                            hint=f"Known ops: {', '.join(sorted(REGISTRY))}.")
        cls = REGISTRY.get(str(raw["op"]))
        if cls is None:
            raise DataError(f"transforms.{i}.op: unknown transform {raw['op']!r}.", field=f"transforms.{i}.op",
                            hint=f"Known ops: {', '.join(sorted(REGISTRY))}.")
        try:
            params = cls.params_model.model_validate(raw)
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join([f"transforms.{i}", *(str(p) for p in e["loc"])])
            raise DataError(f"{where}: {e['msg']}", field=where,
                            hint=f"See the '{cls.name}' transform in data/README.md.") from None
        out.append(cls(params))
    return out


# ---- fields --------------------------------------------------------------------------------------

class SelectParams(Params):
    fields: list[str] = Field(min_length=1)


@register
class Select(Transform):
    """Keep only these fields (a missing one dead-letters the record)."""

    name, params_model = "select", SelectParams

    def record_fn(self) -> RecordFn:
        fields = tuple(self.params.fields)  # type: ignore[attr-defined]

        def select(r: Record) -> Record:
            try:
                return {f: r[f] for f in fields}
            except KeyError as exc:
                raise RecordError(str(exc.args[0]), "select", f"select needs field {exc.args[0]!r}") from None
        return select


class DropParams(Params):
    fields: list[str] = Field(min_length=1)


@register
class Drop(Transform):
    name, params_model = "drop", DropParams

    def record_fn(self) -> RecordFn:
        fields = tuple(self.params.fields)  # type: ignore[attr-defined]

        def drop(r: Record) -> Record:
            return {k: v for k, v in r.items() if k not in fields}
        return drop


class RenameParams(Params):
    mapping: dict[str, str] = Field(min_length=1)


@register
class Rename(Transform):
    name, params_model = "rename", RenameParams

    def record_fn(self) -> RecordFn:
        mapping = dict(self.params.mapping)  # type: ignore[attr-defined]

        def rename(r: Record) -> Record:
            return {mapping.get(k, k): v for k, v in r.items()}
        return rename


# ---- features ------------------------------------------------------------------------------------

class NormalizeParams(Params):
    fields: list[str] = Field(min_length=1)
    method: Literal["zscore", "minmax"] = "zscore"
    stats: dict[str, tuple[float, float]] | None = Field(
        default=None, description="per field (mean, std) or (min, max); computed from the data when absent")

    @model_validator(mode="after")
    def _stats_cover(self) -> NormalizeParams:
        if self.stats is not None:
            missing = [f for f in self.fields if f not in self.stats]
            if missing:
                raise ValueError(f"stats lack {', '.join(missing)}; give all or none")
        return self


def normalizer(fields: list[str], method: str, stats: dict[str, tuple[float, float]]) -> RecordFn:
    """(x - a) / b with (a, b) = (mean, std) or (min, max - min); a constant field maps to 0."""
    coef = {}
    for f in fields:
        a, b = stats[f]
        scale = (b - a) if method == "minmax" else b
        coef[f] = (a, 1.0 / scale if scale else 0.0)

    def normalize(r: Record) -> Record:
        out = dict(r)
        for f, (a, inv) in coef.items():
            v = r.get(f)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise RecordError(f, "normalize", f"normalize needs a number in {f}, got {v!r:.60}")
            out[f] = (v - a) * inv
        return out
    return normalize


@register
class Normalize(Transform):
    name, params_model = "normalize", NormalizeParams

    def record_fn(self) -> RecordFn | None:
        p: NormalizeParams = self.params  # type: ignore[assignment]
        if p.stats is None:
            return None  # the runner computes statistics first (one extra pass)
        return normalizer(p.fields, p.method, p.stats)


def _bucket(text: str, buckets: int) -> int:
    return zlib.crc32(text.encode()) % buckets


class HashParams(Params):
    fields: list[str] = Field(min_length=1)
    buckets: int = Field(default=1 << 20, ge=2, le=1 << 31)
    output: str = "features"


@register
class HashFeatures(Transform):
    """Feature hashing of categorical fields: ``field=value`` -> bucket index (sorted, deduplicated)."""

    name, params_model = "hash_features", HashParams

    def record_fn(self) -> RecordFn:
        p: HashParams = self.params  # type: ignore[assignment]
        fields, buckets, output = tuple(p.fields), p.buckets, p.output

        def hash_features(r: Record) -> Record:
            idx = {zlib.crc32(f"{f}={r[f]}".encode()) % buckets for f in fields if r.get(f) is not None}
            out = dict(r)
            out[output] = sorted(idx)
            return out
        return hash_features


class TokenizeParams(Params):
    field: str
    output: str = "tokens"
    pattern: str = r"\w+"
    lowercase: bool = True
    buckets: int = Field(default=1 << 18, ge=2, le=1 << 31, description="hashed vocabulary size")
    max_tokens: int = Field(default=512, ge=1, alias="maxTokens")


@register
class Tokenize(Transform):
    """Split text with a regex and hash each token into a fixed vocabulary (no vocabulary file)."""

    name, params_model = "tokenize", TokenizeParams

    def record_fn(self) -> RecordFn:
        p: TokenizeParams = self.params  # type: ignore[assignment]
        rx, field, output, buckets, limit, lower = re.compile(p.pattern), p.field, p.output, p.buckets, \
            p.max_tokens, p.lowercase

        def tokenize(r: Record) -> Record:
            text = r.get(field)
            if not isinstance(text, str):
                raise RecordError(field, "tokenize", f"tokenize needs a string in {field}, got {text!r:.60}")
            words = rx.findall(text.lower() if lower else text)[:limit]
            out = dict(r)
            out[output] = [_bucket(w, buckets) for w in words]
            return out
        return tokenize


# ---- filter --------------------------------------------------------------------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "in": lambda a, b: a in b, "not_in": lambda a, b: a not in b,
}
_ALIASES = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    op: Literal["==", "!=", "<", "<=", ">", ">=", "eq", "ne", "lt", "le", "gt", "ge", "in", "not_in",
                "exists", "missing", "matches"]
    value: Any = None

    @model_validator(mode="after")
    def _value_fits(self) -> Condition:
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"op {self.op!r} needs a list value")
        if self.op == "matches":
            try:
                re.compile(str(self.value))
            except re.error as exc:
                raise ValueError(f"value {self.value!r} is not a valid regular expression: {exc}") from None
        return self


class FilterParams(Params):
    where: list[Condition] = Field(min_length=1)
    mode: Literal["all", "any"] = "all"


def _condition(c: Condition) -> Callable[[Record], bool]:
    field, value = c.field, c.value
    if c.op == "exists":
        return lambda r: r.get(field) is not None
    if c.op == "missing":
        return lambda r: r.get(field) is None
    if c.op == "matches":
        rx = re.compile(str(value))
        return lambda r: isinstance(r.get(field), str) and rx.search(r[field]) is not None
    fn = _OPS[_ALIASES.get(c.op, c.op)]

    def test(r: Record) -> bool:
        if field not in r:
            return False
        try:
            return bool(fn(r[field], value))
        except TypeError:
            raise RecordError(field, "filter", f"cannot compare {field}={r[field]!r:.40} {c.op} {value!r:.40}") \
                from None
    return test


@register
class Filter(Transform):
    """Keep records matching all (or any) conditions; the rest are counted as filtered, not invalid."""

    name, params_model = "filter", FilterParams

    def record_fn(self) -> RecordFn:
        p: FilterParams = self.params  # type: ignore[assignment]
        tests = [_condition(c) for c in p.where]
        combine = all if p.mode == "all" else any

        def keep(r: Record) -> Record | None:
            return r if combine(t(r) for t in tests) else None
        return keep


# ---- several sources -----------------------------------------------------------------------------

class JoinParams(Params):
    sources: list[str] = Field(min_length=2)
    key: str = Field(min_length=1)
    how: Literal["inner", "left", "outer"] = "inner"


@register
class Join(Transform):
    """Join sources on one key field (CoGroupByKey); clashing fields get a ``<source>_`` prefix."""

    name, params_model, combines_sources = "join", JoinParams, True

    def record_fn(self) -> None:
        return None


class UnionParams(Params):
    sources: list[str] = Field(min_length=2)
    tag: str | None = Field(default=None, description="add a field with the source's name")


@register
class Union(Transform):
    name, params_model, combines_sources = "union", UnionParams, True

    def record_fn(self) -> None:
        return None
