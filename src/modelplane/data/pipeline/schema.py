"""Record validation against a :class:`SchemaSpec`, compiled once into plain closures (hot path).

A failing record raises :class:`RecordError` carrying the field and the rule it broke; the pipeline
turns that into a dead-letter row, so nothing invalid is dropped without a reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from modelplane.data.pipeline.spec import FieldRule, SchemaSpec

Record = dict[str, Any]
Check = Callable[[Any], Any]


class RecordError(Exception):
    """One record broke one rule; becomes a dead-letter row, never an exception the run sees."""

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.field, self.rule, self.message = field, rule, message


_MISSING = object()
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _coerce(kind: str, value: Any) -> Any:
    if not isinstance(value, str):
        if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    s = value.strip()
    try:
        if kind == "int":
            return int(s)
        if kind == "float":
            return float(s)
    except ValueError:
        return value
    if kind == "bool":
        low = s.lower()
        return True if low in _TRUE else False if low in _FALSE else value
    return value


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (float, int), "bool": (bool,), "list": (list,), "dict": (dict,),
}


def _field_check(name: str, rule: FieldRule, coerce: bool) -> Check:
    kind = rule.type
    types = _PY_TYPES.get(kind)
    lo, hi = rule.min, rule.max
    pattern = re.compile(rule.pattern) if rule.pattern is not None else None
    enum = rule.enum

    def check(value: Any) -> Any:
        if value is None:
            if rule.nullable:
                return None
            raise RecordError(name, "nullable", f"{name} is null")
        if coerce and kind in ("int", "float", "bool"):
            value = _coerce(kind, value)
        if types is not None and (not isinstance(value, types) or (kind != "bool" and isinstance(value, bool))):
            raise RecordError(name, "type", f"{name} must be {kind}, got {type(value).__name__} {value!r:.60}")
        if kind == "float":
            value = float(value)
            if not math.isfinite(value):
                raise RecordError(name, "type", f"{name} must be a finite number, got {value}")
        if lo is not None and value < lo:
            raise RecordError(name, "min", f"{name}={value!r} is below the minimum {lo:g}")
        if hi is not None and value > hi:
            raise RecordError(name, "max", f"{name}={value!r} is above the maximum {hi:g}")
        if rule.min_length is not None and len(value) < rule.min_length:
            raise RecordError(name, "min_length", f"{name} has length {len(value)} < {rule.min_length}")
        if rule.max_length is not None and len(value) > rule.max_length:
            raise RecordError(name, "max_length", f"{name} has length {len(value)} > {rule.max_length}")
        if pattern is not None and not pattern.fullmatch(str(value)):
            raise RecordError(name, "pattern", f"{name}={value!r:.60} does not match {rule.pattern!r}")
        if enum is not None and value not in enum:
            raise RecordError(name, "enum", f"{name}={value!r:.60} is not one of {enum}")
        return value

    return check


def compile_schema(schema: SchemaSpec | None) -> Callable[[Record], Record]:
    """A function returning the cleaned record (coerced, extra fields per policy) or raising RecordError."""
    if schema is None:
        return _identity
    # An empty CSV cell counts as missing, except for a required str (where minLength decides).
    checks = [(name, rule.required, rule.type != "str" or not rule.required, _field_check(name, rule, schema.coerce))
              for name, rule in schema.fields.items()]
    known = set(schema.fields)
    extra = schema.extra

    def validate(record: Record) -> Record:
        if not isinstance(record, dict):
            raise RecordError("", "object", f"a record must be an object, got {type(record).__name__}")
        out: Record = dict(record) if extra == "keep" else {}
        for name, required, empty_is_missing, check in checks:
            value = record.get(name, _MISSING)
            if value is _MISSING or (empty_is_missing and value == ""):
                if required:
                    raise RecordError(name, "required", f"{name} is required but missing")
                out[name] = None  # a stable set of columns for Parquet and downstream readers
                continue
            out[name] = check(value)
        if extra == "reject":
            unknown = sorted(set(record) - known)
            if unknown:
                raise RecordError(unknown[0], "extra", f"fields not in the schema: {', '.join(unknown)}")
        return out

    return validate


def _identity(record: Record) -> Record:
    if not isinstance(record, dict):
        raise RecordError("", "object", f"a record must be an object, got {type(record).__name__}")
    return record
