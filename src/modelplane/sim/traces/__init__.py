"""Loaders for the cluster traces in ``../shared/data/traces`` (read in place, never copied)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from modelplane.core.errors import ModelplaneError

DEFAULT_TRACE_ROOT = Path("../shared/data/traces")


class TraceError(ModelplaneError):
    """A trace file is missing or does not have the columns its loader expects."""


def trace_root(root: str | Path | None = None) -> Path:
    return Path(root) if root is not None else DEFAULT_TRACE_ROOT


def read_rows(path: Path, required: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """Rows of a CSV file as dicts with stripped keys and values; checks the required columns."""
    if not path.is_file():
        raise TraceError(
            f"trace file {path} not found",
            hint="run from the repository root so that ../shared/data/traces exists, or pass the trace folder",
            field=str(path),
        )
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise TraceError(f"trace file {path} is empty", field=str(path)) from None
        missing = [c for c in required if c not in header]
        if missing:
            raise TraceError(
                f"trace file {path} lacks column(s) {', '.join(missing)}; it has {', '.join(header)}",
                hint="check that the file is the one the loader is for",
                field=str(path),
            )
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < len(header):
                row = row + [""] * (len(header) - len(row))
            rec = {h: v.strip() for h, v in zip(header, row, strict=False)}
            rec["__line__"] = str(line_no)
            yield rec


def to_int(rec: dict[str, str], key: str, path: Path, default: int | None = None) -> int:
    raw = rec.get(key, "")
    if raw == "" and default is not None:
        return default
    try:
        return int(float(raw))
    except ValueError:
        raise TraceError(
            f"{path}:{rec.get('__line__', '?')}: column {key!r} is {raw!r}, expected a number", field=key
        ) from None
