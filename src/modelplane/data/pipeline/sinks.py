"""Shard writers and the commit that makes a sink's directory visible whole or not at all.

Each Beam bundle writes its own shard files into a hidden staging directory next to the target
(``.NAME.staging-RUN``), as ``*.inprogress`` renamed when the shard is closed. After the pipeline has
finished, :func:`commit` drops leftovers of failed bundle attempts, writes ``_manifest.json`` and
renames the staging directory onto the target in one ``os.replace``: a reader sees no directory or a
complete one. A killed run leaves only the hidden staging directory (safe to delete).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from modelplane.data.errors import DataError
from modelplane.data.pipeline.beam import beam
from modelplane.data.tfrecord import encode_record

INPROGRESS = ".inprogress"
MANIFEST = "_manifest.json"
EXT = {"tfrecord": ".tfrecord", "parquet": ".parquet", "jsonl": ".jsonl"}
_PARQUET_BATCH = 65_536


def staging_dir(target: str | os.PathLike[str], run_id: str) -> Path:
    t = Path(target).absolute()
    return t.parent / f".{t.name}.staging-{run_id}"


def check_target(target: str, mode: str, field: str) -> None:
    """Fail before any work when the output exists and may not be replaced, or is not a local path."""
    if "://" in target:
        raise DataError(f"{field}: sinks write to a local or mounted directory, not {target!r}.", field=field,
                        hint="Write to a local path (e.g. a mounted volume) and upload the committed directory.")
    if mode == "error" and Path(target).exists():
        raise DataError(f"{field}: {target} already exists.", field=field,
                        hint="Choose a new path, or set mode: overwrite to replace it when the run commits.")


class _Shard:
    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt, self.count = path, fmt, 0
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._rows: list[dict[str, Any]] = []
        self._pq: Any = None

    def write(self, rec: dict[str, Any]) -> None:
        self.count += 1
        if self.fmt == "tfrecord":
            self._file.write(encode_record(json.dumps(rec, separators=(",", ":"), default=str).encode()))
        elif self.fmt == "jsonl":
            self._file.write(json.dumps(rec, separators=(",", ":"), default=str).encode() + b"\n")
        else:
            self._rows.append(rec)
            if len(self._rows) >= _PARQUET_BATCH:
                self._flush_parquet()

    def _flush_parquet(self) -> None:
        if not self._rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = list(dict.fromkeys(k for r in self._rows for k in r))  # records may omit optional fields
        if self._pq is None:
            table = pa.Table.from_pydict({k: [r.get(k) for r in self._rows] for k in keys})
            self._pq = pq.ParquetWriter(self._file, table.schema)
        else:
            schema = self._pq.schema.to_arrow_schema()
            new = [k for k in keys if k not in schema.names]
            if new:
                raise DataError(f"field {new[0]!r} first appears after {self.count - len(self._rows)} records "
                                f"of a Parquet shard, whose columns are fixed by then.", field=new[0],
                                hint="Declare it in the schema (optional fields become null columns).")
            table = pa.Table.from_pydict({k: [r.get(k) for r in self._rows] for k in schema.names}, schema=schema)
        self._pq.write_table(table)
        self._rows = []

    def close(self) -> Path:
        if self.fmt == "parquet":
            self._flush_parquet()
            if self._pq is not None:
                self._pq.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self.path.with_name(self.path.name.removesuffix(INPROGRESS))
        os.replace(self.path, final)
        return final


class WriteShards(beam.DoFn):  # type: ignore[misc]
    """Per-bundle shard files (no shuffle), rolled over every ``max_records`` records. Takes records
    or batches (lists) of them."""

    def __init__(self, directory: str, fmt: str, max_records: int, counter: str) -> None:
        self.directory, self.fmt, self.max_records, self.counter_name = directory, fmt, max_records, counter

    def setup(self) -> None:
        Path(self.directory).mkdir(parents=True, exist_ok=True)
        self.written = beam.metrics.Metrics.counter("modelplane", self.counter_name)

    def start_bundle(self) -> None:
        self._bundle = uuid.uuid4().hex[:12]
        self._seq = 0
        self._shard: _Shard | None = None

    def process(self, item: dict[str, Any] | list[dict[str, Any]]) -> None:
        for rec in item if isinstance(item, list) else (item,):
            if self._shard is None:
                name = f"part-{self._bundle}-{self._seq:05d}{EXT[self.fmt]}{INPROGRESS}"
                self._shard = _Shard(Path(self.directory) / name, self.fmt)
                self._seq += 1
            self._shard.write(rec)
            if self._shard.count >= self.max_records:
                self._close()

    def _close(self) -> None:
        if self._shard is not None:
            self._shard.close()
            self.written.inc(self._shard.count)
            self._shard = None

    def finish_bundle(self) -> None:
        self._close()


def commit(staging: Path, target: str, mode: str, meta: dict[str, Any]) -> dict[str, Any]:
    """Make ``staging`` visible as ``target`` in one rename; returns the manifest written."""
    staging.mkdir(parents=True, exist_ok=True)
    for leftover in staging.glob(f"*{INPROGRESS}"):
        leftover.unlink()  # a failed bundle attempt; its records were written again by the retry
    files = sorted(p for p in staging.iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {**meta, "files": [{"name": f.name, "bytes": f.stat().st_size} for f in files],
                "committed_at": time.time()}
    tmp = staging / (MANIFEST + INPROGRESS)
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, staging / MANIFEST)
    dest = Path(target).absolute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if dest.exists():
        if mode != "overwrite":
            raise DataError(f"{target} appeared while the pipeline ran; the output stays in {staging}.",
                            field="path", hint="Move it into place yourself, or rerun with mode: overwrite.")
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
    os.replace(staging, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return manifest
