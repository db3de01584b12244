"""OpenLineage events: valid JSON for any consumer, and folded into the lineage graph."""

from __future__ import annotations

import json

from modelplane.data.lineage import LineageStore
from modelplane.data.openlineage_events import record, run_event, to_json


def test_events_serialize_and_build_the_graph() -> None:
    store = LineageStore("sqlite://")
    store.create_schema()
    prep = run_event(job="prep", inputs=[("s3://raw", "a"), ("s3://raw", "b")], outputs=[("s3://ds", "clean")])
    body = json.loads(to_json(prep))
    assert body["eventType"] == "COMPLETE" and body["job"]["name"] == "prep"
    assert [i["name"] for i in body["inputs"]] == ["a", "b"] and body["producer"]
    record(store, prep, job_kind="pipeline")
    record(store, run_event(job="train", inputs=[("s3://ds", "clean")], outputs=[("models", "llm")]),
           job_kind="training")
    record(store, run_event(job="chat-prod", inputs=[("models", "llm")]),
           job_kind="deployment")
    raw_a = store.find("dataset", "a", "s3://raw")
    assert [(h.node.name, h.depth) for h in store.impact(raw_a.id)] == [("chat-prod", 5)]
