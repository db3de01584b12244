"""Pipeline definitions: bad input names its field; manifests run the definition by default; the
validation rules behave as documented (property tests); the example pipeline runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from modelplane.cli import app
from modelplane.core.spec import PIPELINE_COMMAND, PIPELINE_SPEC_ENV, Pipeline, parse_manifest
from modelplane.data.errors import DataError
from modelplane.data.pipeline import from_env, from_mapping
from modelplane.data.pipeline.runner import run
from modelplane.data.pipeline.schema import RecordError, compile_schema
from modelplane.data.pipeline.spec import SchemaSpec
from modelplane.data.pipeline.transforms import parse

REPO = Path(__file__).resolve().parents[2]


def good(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "in.jsonl").write_text('{"id": 1}\n')
    return {"name": "p", "sources": [{"name": "a", "type": "files", "path": str(tmp_path / "in.jsonl")}],
            "sinks": [{"type": "jsonl", "path": str(tmp_path / "out")}],
            "deadLetter": {"path": str(tmp_path / "dead")}, "lineage": {"enabled": False}}


@pytest.mark.parametrize(("change", "field", "words"), [
    (lambda d: d.pop("sinks"), "sinks", "Field required"),
    (lambda d: d["sources"][0].update(type="ftp"), "sources.0", "type"),
    (lambda d: d["sources"][0].pop("path"), "sources.0.files.path", "Field required"),
    (lambda d: d.update(schema={"fields": {"id": {"type": "integer"}}}), "schema.fields.id.type", "str"),
    (lambda d: d.update(schema={"fields": {"id": {"type": "int", "min": 5, "max": 1}}}), "schema.fields.id",
     "min (5.0) is greater than max"),
    (lambda d: d["sinks"][0].update(type="csv"), "sinks.0.type", "tfrecord"),
    (lambda d: d.update(deadLetter={"path": d["sinks"][0]["path"]}), "", "own path"),
    (lambda d: d["sources"].append(dict(d["sources"][0])), "", "repeated: a"),
])
def test_bad_definitions_name_the_field(tmp_path: Path, change: Any, field: str, words: str) -> None:
    d = good(tmp_path)
    change(d)
    with pytest.raises(DataError) as err:
        from_mapping(d)
    assert err.value.field == field and words in err.value.message


@pytest.mark.parametrize(("steps", "field", "words"), [
    ([{"op": "explode"}], "transforms.0.op", "unknown transform 'explode'"),
    ([{"op": "select"}], "transforms.0.fields", "Field required"),
    ([{"op": "filter", "where": [{"field": "x", "op": "~="}]}], "transforms.0.where.0.op", "Input should be"),
    ([{"op": "filter", "where": [{"field": "x", "op": "in", "value": 3}]}], "transforms.0.where.0", "list"),
    ([{"op": "normalize", "fields": ["a", "b"], "stats": {"a": [0, 1]}}], "transforms.0", "stats lack b"),
    ([{"op": "union", "sources": ["a", "b"]}], "transforms.0.op", "needs several sources"),
])
def test_bad_transforms_name_the_step(tmp_path: Path, steps: list[dict[str, Any]], field: str, words: str) -> None:
    d = good(tmp_path)
    d["transforms"] = steps
    with pytest.raises(DataError) as err:
        run(from_mapping(d))
    assert err.value.field == field and words in err.value.message
    assert not (tmp_path / "out").exists()


def test_kafka_source_is_defined_but_needs_the_expansion_service(tmp_path: Path) -> None:
    d = good(tmp_path)
    d["sources"] = [{"name": "k", "type": "kafka", "bootstrapServers": "127.0.0.1:9092", "topic": "t",
                     "maxRecords": 10, "expansionService": "127.0.0.1:8097"}]
    assert from_mapping(d).sources[0].type == "kafka"
    d["sources"][0].pop("maxRecords")  # an unbounded read is refused: pipelines are batch jobs
    with pytest.raises(DataError) as err:
        from_mapping(d)
    assert err.value.field == "sources.0.kafka.maxRecords"


def test_several_sources_need_a_join_or_union_naming_each(tmp_path: Path) -> None:
    d = good(tmp_path)
    d["sources"].append({**d["sources"][0], "name": "b"})
    with pytest.raises(DataError, match="need a join or union") as err:
        run(from_mapping(d))
    assert err.value.field == "transforms.0"
    d["transforms"] = [{"op": "join", "sources": ["a", "c"], "key": "id"}]
    with pytest.raises(DataError, match=r"unknown \['c'\], missing \['b'\]"):
        run(from_mapping(d))


def test_cli_reports_a_bad_spec_without_a_traceback(tmp_path: Path) -> None:
    d = good(tmp_path)
    d["sinks"][0]["mode"] = "sometimes"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(d))
    res = CliRunner().invoke(app, ["data", "pipeline", "run", str(tmp_path / "bad.yaml")])
    assert res.exit_code == 2 and "sinks.0.mode" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["data", "pipeline", "run", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "does not exist" in " ".join(res.output.split())


def test_cli_runs_a_pipeline_and_prints_the_counts(tmp_path: Path) -> None:
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(good(tmp_path)))
    res = CliRunner().invoke(app, ["data", "pipeline", "run", str(tmp_path / "ok.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["read"] == 1 and report["sinks"][str(tmp_path / "out")]["records"] == 1


def test_pipeline_manifest_runs_its_definition_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = yaml.safe_load((REPO / "examples" / "pipeline.yaml").read_text())
    manifest = parse_manifest(doc)
    assert isinstance(manifest, Pipeline)
    tmpl = manifest.spec.template
    assert tuple(tmpl.command) == PIPELINE_COMMAND
    monkeypatch.setenv(PIPELINE_SPEC_ENV, tmpl.env[PIPELINE_SPEC_ENV])
    monkeypatch.setenv("MODELPLANE_JOB_NAME", manifest.metadata.name)
    defn = from_env()
    assert defn.name == "features-daily" and [s.name for s in defn.sources] == ["code", "conv"]
    # An explicit template is kept as written.
    doc["spec"]["template"] = {"command": ["echo", "hi"]}
    assert parse_manifest(doc).spec.template.command == ["echo", "hi"]  # type: ignore[union-attr]


def test_example_pipeline_runs_on_the_shared_trace(tmp_path: Path) -> None:
    doc = yaml.safe_load((REPO / "examples" / "pipeline.yaml").read_text())
    body = doc["spec"]["pipeline"]
    for sink in body["sinks"]:
        sink["path"] = str(tmp_path / Path(sink["path"]).name)
    body["deadLetter"]["path"] = str(tmp_path / "dead")
    body["lineage"] = {"url": f"sqlite:///{tmp_path / 'lineage.db'}"}
    for src in body["sources"]:
        src["path"] = str(REPO / src["path"])
    report = run(from_mapping(doc))
    assert report.read == 8819 + 19366  # both Azure trace files, every row accounted for
    written = report.sinks[str(tmp_path / "tfrecord")]["records"]
    assert written + report.invalid + report.counters.get("filtered.filter", 0) == report.read
    assert written > 28_000


# ---- rules as properties -----------------------------------------------------------------------------

@given(lo=st.integers(-1000, 1000), width=st.integers(0, 1000), x=st.integers(-3000, 3000),
       as_text=st.booleans())
def test_range_rule_accepts_exactly_the_closed_interval(lo: int, width: int, x: int, as_text: bool) -> None:
    validate = compile_schema(SchemaSpec.model_validate({"fields": {"n": {"type": "int", "min": lo,
                                                                          "max": lo + width}}}))
    try:
        out = validate({"n": str(x) if as_text else x})
        assert lo <= x <= lo + width and out["n"] == x
    except RecordError as e:
        assert not lo <= x <= lo + width
        assert e.field == "n" and e.rule == ("min" if x < lo else "max")


@given(value=st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none()),
       op=st.sampled_from(["==", "!=", "<", ">=", "exists", "missing", "in"]), ref=st.integers(-5, 5))
def test_filter_keeps_what_python_comparison_keeps(value: Any, op: str, ref: int) -> None:
    cond: dict[str, Any] = {"field": "x", "op": op, "value": [ref, 0] if op == "in" else ref}
    keep = parse([{"op": "filter", "where": [cond]}])[0].record_fn()
    assert keep is not None
    rec = {"x": value}
    expected: Any
    if op == "exists":
        expected = value is not None
    elif op == "missing":
        expected = value is None
    elif op == "in":
        expected = value in (ref, 0)
    elif op in ("==", "!="):
        expected = (value == ref) == (op == "==")
    elif isinstance(value, int):
        expected = value < ref if op == "<" else value >= ref
    else:
        with pytest.raises(RecordError):
            keep(rec)
        return
    assert (keep(rec) is rec) == expected
