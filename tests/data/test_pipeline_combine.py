"""Several sources in one pipeline (join by key, union) and steps that need the whole data set."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from modelplane.data.pipeline import from_mapping
from modelplane.data.pipeline.runner import run

USERS = [{"user_id": 1, "name": "ada", "tier": "pro"}, {"user_id": 2, "name": "bob", "tier": "free"},
         {"user_id": 3, "name": "cyd", "tier": "free"}]
EVENTS = [{"user_id": 1, "event": "login", "tier": "x", "ms": 10}, {"user_id": 1, "event": "train", "ms": 30},
          {"user_id": 2, "event": "login", "ms": 20}, {"user_id": 9, "event": "orphan", "ms": 5},
          {"event": "keyless", "ms": 1}]


def jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def base(tmp_path: Path, transforms: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "combine-test",
        "sources": [
            {"name": "users", "type": "files", "path": jsonl(tmp_path / "users.jsonl", USERS),
             "schema": {"fields": {"user_id": {"type": "int"}, "name": {"type": "str"}, "tier": {"type": "str"}}}},
            {"name": "events", "type": "files", "path": jsonl(tmp_path / "events.jsonl", EVENTS),
             "schema": {"fields": {"user_id": {"type": "int", "required": False}, "event": {"type": "str"},
                                   "ms": {"type": "int", "min": 0}}}},
        ],
        "transforms": transforms,
        "sinks": [{"type": "parquet", "path": str(tmp_path / "out")}],
        "deadLetter": {"path": str(tmp_path / "dead")},
        "lineage": {"url": f"sqlite:///{tmp_path / 'lineage.db'}"},
    }


def test_inner_join_by_key_prefixes_clashing_fields_and_counts_the_unmatched(tmp_path: Path) -> None:
    report = run(from_mapping(base(tmp_path, [{"op": "join", "sources": ["users", "events"], "key": "user_id"}])))
    rows = sorted(pq.read_table(tmp_path / "out").to_pylist(), key=lambda r: (r["user_id"], r["event"]))
    assert [(r["user_id"], r["name"], r["event"], r["ms"]) for r in rows] == [
        (1, "ada", "login", 10), (1, "ada", "train", 30), (2, "bob", "login", 20)]
    assert rows[0]["tier"] == "pro" and rows[0]["events_tier"] == "x"  # the clash keeps both values
    assert report.counters["join.unmatched"] == 2  # user 3, event of user 9
    dead = [json.loads(line) for f in (tmp_path / "dead").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [(d["source"], d["stage"], d["field"], d["rule"]) for d in dead] == [
        ("events", "join", "user_id", "join_key")]
    assert report.read == 8 and report.invalid == 1 == report.dead_letter["records"]


def test_left_join_keeps_every_left_record(tmp_path: Path) -> None:
    run(from_mapping(base(tmp_path, [{"op": "join", "sources": ["users", "events"], "key": "user_id", "how": "left"},
                                     {"op": "select", "fields": ["user_id", "name"]}])))
    rows = sorted((r["user_id"], r["name"]) for r in pq.read_table(tmp_path / "out").to_pylist())
    assert rows == [(1, "ada"), (1, "ada"), (2, "bob"), (3, "cyd")]


def test_union_then_filter_and_normalize_from_the_data(tmp_path: Path) -> None:
    d = base(tmp_path, [
        {"op": "union", "sources": ["users", "events"], "tag": "src"},
        {"op": "filter", "where": [{"field": "src", "op": "==", "value": "events"},
                                   {"field": "user_id", "op": "exists"}]},
        {"op": "normalize", "fields": ["ms"], "method": "zscore"},
        {"op": "rename", "mapping": {"ms": "ms_z"}},
    ])
    report = run(from_mapping(d))
    rows = pq.read_table(tmp_path / "out").to_pylist()
    assert sorted(r["event"] for r in rows) == ["login", "login", "orphan", "train"]
    z = [r["ms_z"] for r in rows]
    assert math.isclose(sum(z), 0.0, abs_tol=1e-9)
    assert math.isclose(sum(v * v for v in z) / len(z), 1.0, rel_tol=1e-9)
    assert report.counters["filtered.filter"] == 4  # 3 users + the keyless event
