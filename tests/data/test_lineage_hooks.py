"""The model-registry hook: each registered version enters the lineage graph with its run, checkpoint
and dataset, so impact queries reach models (and their deployments) from raw data."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelplane.data.lineage import LineageStore
from modelplane.data.lineage_hooks import ModelLineageHook, split_uri
from modelplane.data.openlineage_events import record, run_event
from modelplane.serve.registry import Lineage, ModelRegistry


def tiny_onnx() -> bytes:
    """An Identity model: the smallest graph onnx.checker accepts."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


@pytest.fixture
def graph(tmp_path: Path) -> LineageStore:
    s = LineageStore(f"sqlite:///{tmp_path / 'lineage.db'}")
    s.create_schema()
    return s


def test_registered_versions_are_linked_to_run_checkpoint_and_dataset(tmp_path: Path, graph: LineageStore) -> None:
    # a pipeline made the dataset from a raw source (as its OpenLineage event says)
    record(graph, run_event(job="prep", inputs=[("s3://raw", "a")], outputs=[("s3://ds", "clean")]))
    reg = ModelRegistry(str(tmp_path / "models"), lineage_hooks=[ModelLineageHook(graph)])
    lin = Lineage(training_run="train-llm", checkpoint="s3://ckpt/train-llm/step-900", dataset="s3://ds/clean")
    v1 = reg.register("llm", tiny_onnx(), now=1.0, lineage=lin)
    v2 = reg.register("llm", tiny_onnx(), now=2.0, lineage=Lineage(training_run="train-llm-2"))

    model = graph.find("model", "llm:1", "modelplane")
    assert model.attrs == {"model": "llm", "version": 1, "uri": v1.uri}
    up = {(h.node.kind, h.node.namespace, h.node.name): h.depth for h in graph.upstream(model.id, depth=10)}
    assert up == {("checkpoint", "s3://ckpt", "train-llm/step-900"): 1, ("training", "modelplane", "train-llm"): 1,
                  ("dataset", "s3://ds", "clean"): 2, ("pipeline", "modelplane", "prep"): 3,
                  ("dataset", "s3://raw", "a"): 4}
    run = graph.find("training", "train-llm", "modelplane")
    assert {h.node.name for h in graph.downstream(run.id, depth=1)} == {"llm:1", "train-llm/step-900"}
    # a deployment of v1 is reached from the raw source; v2, trained elsewhere, is not
    record(graph, run_event(job="chat", inputs=[("modelplane", "llm:1")]), job_kind="deployment")
    raw = graph.find("dataset", "a", "s3://raw")
    assert [h.node.name for h in graph.impact(raw.id)] == ["chat"]
    assert [h.node.name for h in graph.impact(raw.id, kind="model")] == ["llm:1"]
    v2_node = graph.find("model", f"llm:{v2.version}", "modelplane")
    assert [h.node.name for h in graph.upstream(v2_node.id, depth=5)] == ["train-llm-2"]


def test_hook_is_idempotent_and_handles_partial_lineage(graph: LineageStore) -> None:
    from modelplane.serve.registry import ModelVersion, Stage

    hook = ModelLineageHook(graph)
    only_data = ModelVersion("m", 1, Stage.STAGING, "file:///m/1/model.onnx", 0.0, {}, Lineage(dataset="clean-v1"))
    first = hook(only_data)
    assert hook(only_data) == first
    assert [(h.node.kind, h.node.name) for h in graph.upstream(first, depth=3)] == [("dataset", "clean-v1")]
    bare = hook(ModelVersion("m", 2, Stage.STAGING, "u", 0.0, {}, Lineage()))
    assert graph.upstream(bare, depth=3) == []


def test_split_uri_follows_openlineage_naming() -> None:
    assert split_uri("s3://bucket/a/b", "d") == ("s3://bucket", "a/b")
    assert split_uri("gs://bucket", "d") == ("gs://bucket", "/")
    assert split_uri("file:///data/x", "d") == ("file", "/data/x")
    assert split_uri("/data/x", "d") == ("file", "/data/x")
    assert split_uri("clean-v1", "d") == ("d", "clean-v1")


@given(scheme=st.sampled_from(["s3", "gs", "hdfs", "abfss"]),
       authority=st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True),
       path=st.from_regex(r"[a-z0-9_/.-]{1,40}", fullmatch=True))
def test_split_uri_loses_nothing(scheme: str, authority: str, path: str) -> None:
    ns, name = split_uri(f"{scheme}://{authority}/{path}", "d")
    assert ns == f"{scheme}://{authority}" and f"{ns}/{name}" == f"{scheme}://{authority}/{path}"
