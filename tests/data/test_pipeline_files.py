"""File sources end to end on the DirectRunner: dead letter with reasons, TFRecord and Parquet read
back, lineage edges, CSV typing, S3 through s3fs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from modelplane.data.errors import DataError
from modelplane.data.lineage import LineageStore
from modelplane.data.pipeline import from_mapping
from modelplane.data.pipeline.runner import RunReport, run
from modelplane.data.tfrecord import iter_records

SCHEMA = {
    "extra": "drop",
    "fields": {
        "id": {"type": "int", "min": 0},
        "text": {"type": "str", "minLength": 1},
        "score": {"type": "float", "min": 0, "max": 1},
        "cat": {"type": "str", "enum": ["a", "b"]},
        "email": {"type": "str", "required": False, "pattern": r"[^@\s]+@[^@\s]+"},
    },
}
VALID = [
    {"id": 1, "text": "Hello World", "score": 0.5, "cat": "a"},
    {"id": 2, "text": "the cat sat", "score": 1, "cat": "b", "email": "x@y.org", "junk": 7},
    {"id": 3, "text": "x", "score": 0.0, "cat": "a"},
]
# (line, expected field, expected rule)
INVALID = [
    ({"id": -1, "text": "t", "score": 0.5, "cat": "a"}, "id", "min"),
    ({"id": 5, "text": "t", "score": 1.5, "cat": "a"}, "score", "max"),
    ({"id": "five", "text": "t", "score": 0.5, "cat": "a"}, "id", "type"),
    ({"id": 6, "score": 0.5, "cat": "a"}, "text", "required"),
    ({"id": 7, "text": "t", "score": 0.5, "cat": "z"}, "cat", "enum"),
    ({"id": 8, "text": "t", "score": 0.5, "cat": "a", "email": "nope"}, "email", "pattern"),
    ({"id": 9, "text": "", "score": 0.5, "cat": "a"}, "text", "min_length"),
]


def write_jsonl(path: Path, rows: list[Any], extra_lines: tuple[str, ...] = ()) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines))


def spec(tmp_path: Path, **over: Any) -> dict[str, Any]:
    out = tmp_path / "out"
    base: dict[str, Any] = {
        "name": "files-test",
        "sources": [{"name": "raw", "type": "files", "path": str(tmp_path / "in" / "*.jsonl")}],
        "schema": SCHEMA,
        "transforms": [{"op": "tokenize", "field": "text", "buckets": 1000},
                       {"op": "hash_features", "fields": ["cat"], "buckets": 64}],
        "sinks": [{"type": "tfrecord", "path": str(out / "tf"), "maxRecordsPerShard": 2},
                  {"type": "parquet", "path": str(out / "pq")}],
        "deadLetter": {"path": str(out / "dead")},
        "lineage": {"url": f"sqlite:///{tmp_path / 'lineage.db'}"},
    }
    base.update(over)
    return base


def run_spec(d: dict[str, Any], **kw: Any) -> RunReport:
    return run(from_mapping(d), **kw)


def read_tfrecords(folder: Path) -> list[dict[str, Any]]:
    rows = []
    for f in sorted(folder.glob("*.tfrecord")):
        with open(f, "rb") as fh:
            rows += [json.loads(p) for p in iter_records(fh)]
    return rows


def dead_rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_invalid_records_go_to_the_dead_letter_with_field_and_rule(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", VALID[:2] + [r for r, _, _ in INVALID[:4]])
    write_jsonl(tmp_path / "in" / "b.jsonl", VALID[2:] + [r for r, _, _ in INVALID[4:]], ("{not json", "[1, 2]"))
    report = run_spec(spec(tmp_path))

    dead = dead_rows(tmp_path / "out" / "dead")
    got = sorted((d["record"], d["field"], d["rule"]) for d in dead if d["stage"] == "validate")
    want = sorted([(json.dumps(r, sort_keys=True), f, rule) for r, f, rule in INVALID] + [("[1, 2]", "", "object")])
    assert got == want
    parse = [d for d in dead if d["stage"] == "parse"]
    assert len(parse) == 1 and parse[0]["rule"] == "json" and parse[0]["record"] == "{not json"
    assert "b.jsonl:" in parse[0]["reason"]
    assert all(d["reason"] for d in dead)
    # Nothing is dropped silently: every line read is written or dead-lettered.
    assert report.read == len(VALID) + len(INVALID) + 2
    assert report.invalid == len(dead) == len(INVALID) + 2
    assert report.dead_letter["records"] == len(dead)

    rows = sorted(read_tfrecords(tmp_path / "out" / "tf"), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert "junk" not in rows[1] and rows[1]["email"] == "x@y.org"  # extra: drop keeps schema fields only
    assert rows[0]["score"] == 0.5 and isinstance(rows[1]["score"], float)
    assert len(rows[0]["tokens"]) == 2 and all(0 <= t < 1000 for t in rows[0]["tokens"])
    assert rows[0]["features"] == rows[2]["features"] != rows[1]["features"]  # same cat, same bucket
    assert len(list((tmp_path / "out" / "tf").glob("*.tfrecord"))) >= 2  # rolled at 2 records a shard

    table = pq.read_table(tmp_path / "out" / "pq").to_pylist()
    assert sorted(r["id"] for r in table) == [1, 2, 3]
    assert {r["id"]: r["tokens"] for r in table} == {r["id"]: r["tokens"] for r in rows}
    manifest = json.loads((tmp_path / "out" / "pq" / "_manifest.json").read_text())
    assert manifest["records"] == 3 and manifest["run_id"] == report.run_id


def test_lineage_records_sources_run_and_sinks(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", VALID)
    report = run_spec(spec(tmp_path, lineage={"url": db_url, "namespace": "team-a"}))
    store = LineageStore(db_url)
    job = store.find("pipeline", "files-test", "team-a")
    assert report.lineage_node == job.id
    up = {(h.node.kind, h.node.namespace, h.node.name) for h in store.upstream(job.id, depth=1)}
    assert up == {("dataset", "file", str(tmp_path / "in" / "*.jsonl"))}
    down = {h.node.name for h in store.downstream(job.id, depth=1)}
    assert down == {str(tmp_path / "out" / n) for n in ("tf", "pq", "dead")}


def test_lineage_url_comes_from_the_environment_or_the_run_fails_first(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "in").mkdir()
    write_jsonl(tmp_path / "in" / "a.jsonl", VALID)
    d = spec(tmp_path)
    del d["lineage"]
    monkeypatch.delenv("MODELPLANE_LINEAGE_URL", raising=False)
    with pytest.raises(DataError) as err:
        run_spec(d)
    assert err.value.field == "lineage.url" and "MODELPLANE_LINEAGE_URL" in err.value.hint
    assert not (tmp_path / "out").exists()  # failed before reading or writing anything
    url = f"sqlite:///{tmp_path / 'platform.db'}"
    monkeypatch.setenv("MODELPLANE_LINEAGE_URL", url)
    report = run_spec(d)
    assert LineageStore(url).find("pipeline", "files-test", "modelplane").id == report.lineage_node


def test_csv_source_coerces_types_and_treats_empty_cells_as_missing(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "t.csv").write_text("id,text,score,cat,email\n1,hi there,0.25,a,\n2,yo,0.75,b,a@b.c\n"
                                           "3,,0.1,a,\n4,x,0.2,a,b,EXTRA\n")
    d = spec(tmp_path, sources=[{"name": "csv", "type": "files", "path": str(tmp_path / "in" / "t.csv")}],
             transforms=[], sinks=[{"type": "parquet", "path": str(tmp_path / "out" / "pq")}])
    report = run_spec(d)
    rows = sorted(pq.read_table(tmp_path / "out" / "pq").to_pylist(), key=lambda r: r["id"])
    assert [(r["id"], r["score"], r["email"]) for r in rows] == [(1, 0.25, None), (2, 0.75, "a@b.c")]
    dead = {(d["field"], d["rule"]) for d in dead_rows(tmp_path / "out" / "dead")}
    assert dead == {("text", "min_length"), ("", "csv")}
    assert report.counters["read.csv"] == 4


def test_s3_source_through_s3fs(tmp_path: Path, s3_server: Any, s3fs_bucket: tuple[Any, str]) -> None:
    fs, bucket = s3fs_bucket
    for i, chunk in enumerate((VALID[:2], VALID[2:])):
        fs.pipe(f"{bucket}/raw/part-{i}.jsonl", "".join(json.dumps(r) + "\n" for r in chunk).encode())
    fs.pipe(f"{bucket}/raw/ignored.txt", b"not selected by the glob")
    d = spec(tmp_path, sources=[{"name": "s3", "type": "files", "path": f"s3://{bucket}/raw/*.jsonl",
                                 "storageOptions": s3_server.storage_options()}],
             sinks=[{"type": "parquet", "path": str(tmp_path / "out" / "pq")}])
    report = run_spec(d)
    assert sorted(r["id"] for r in pq.read_table(tmp_path / "out" / "pq").to_pylist()) == [1, 2, 3]
    assert report.counters["read.s3"] == 3
    node = LineageStore(d["lineage"]["url"]).find("dataset", "raw/*.jsonl", f"s3://{bucket}")
    assert node.kind == "dataset"


def test_a_sensitive_datasets_files_are_read_with_the_released_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Encrypted (and gzip-compressed inside) files read like plain ones once the key is released."""
    import gzip
    import io

    from modelplane.data import sensitive

    key = sensitive.DataKey.generate()
    uri = sensitive.normalize_uri(str(tmp_path / "in"))
    asked: list[str] = []

    def release(dataset: str) -> sensitive.DataKey:
        asked.append(dataset)
        return key

    monkeypatch.setattr(sensitive, "_default_client", release)
    (tmp_path / "in").mkdir()
    plain = "".join(json.dumps(r) + "\n" for r in VALID).encode()
    with open(tmp_path / "in" / "a.jsonl.gz", "wb") as dst:
        sensitive.encrypt_stream(io.BytesIO(gzip.compress(plain)), dst, uri, key)
    assert sensitive.is_encrypted(tmp_path / "in" / "a.jsonl.gz")
    report = run_spec(spec(tmp_path, sources=[{"name": "raw", "type": "files", "path": str(tmp_path / "in" / "*.jsonl.gz")}]))
    assert report.read == len(VALID) and asked and set(asked) == {uri}
    assert sorted(r["id"] for r in read_tfrecords(tmp_path / "out" / "tf")) == [1, 2, 3]
