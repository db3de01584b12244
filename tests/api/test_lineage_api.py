"""Lineage through the HTTP API on both databases: OpenLineage events in, walks and impact out,
errors as JSON with a fix, the graph in the platform's own database, and Cedar on every route."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from modelplane.api.app import create_app
from modelplane.api.security import RULES, ApiSecurity, KindAwareRiskScorer, bootstrap_admin
from modelplane.data.lineage import LineageStore, platform_lineage_url
from modelplane.data.openlineage_events import run_event, to_json
from modelplane.security.risk import RiskConfig
from modelplane.settings import Settings
from modelplane.store import Store
from tests.helpers import training_doc

PASSWORD = "correct horse battery"
RISK = RiskConfig(no_device_points=0, odd_hour_points=0, new_source_points=0)
CLUSTER = {
    "apiVersion": "modelplane/v1", "kind": "Cluster",
    "spec": {"nodes": [{"name": "a100-0", "accelerators": {"model": "NVIDIA-A100", "count": 8}}],
             "queues": [{"name": "qa", "kind": "training", "team": "a", "quota": {"NVIDIA-A100": 8}}]},
}


def event(job: str, inputs: list[tuple[str, str]] = [], outputs: list[tuple[str, str]] = [],  # noqa: B006
          **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(to_json(run_event(job=job, inputs=inputs, outputs=outputs, **kw)))
    return body


class World:
    def __init__(self, store: Store, tmp_path: Path) -> None:
        self.store = store
        self.sec = ApiSecurity(store, tmp_path, fast_hashing=True, risk=KindAwareRiskScorer(RISK))
        self.app = create_app(store, security=self.sec)
        self.admin = self.client(bootstrap_admin(self.sec, time.time()) or "")
        assert self.admin.post("/api/v1/cluster/import", json=CLUSTER).status_code == 200
        assert self.admin.post("/api/v1/teams", json={"name": "a"}).status_code == 201
        r = self.admin.post("/api/v1/users", json={"name": "ann", "team": "a", "role": "member", "password": PASSWORD})
        assert r.status_code == 201, r.text
        token = self.client("").post("/api/v1/auth/login", json={"name": "ann", "password": PASSWORD}).json()
        self.ann = self.client(token["access_token"])

    def client(self, token: str) -> TestClient:
        c = TestClient(self.app, raise_server_exceptions=False)
        if token:
            c.headers["Authorization"] = f"Bearer {token}"
        return c


@pytest.fixture
def world(store: Store, tmp_path: Path) -> Iterator[World]:
    w = World(store, tmp_path)
    yield w
    lineage = w.app.state.lineage
    if lineage is not None:
        lineage.engine.dispose()
    w.sec.close()


def record_example(c: TestClient) -> None:
    """Two raw sources -> prep pipeline -> clean dataset -> training -> model -> chat deployment."""
    for body, kind in [
        (event("prep", [("s3://raw", "a"), ("s3://raw", "b/part-0")], [("s3://ds", "clean")]), "pipeline"),
        (event("train-llm", [("s3://ds", "clean")], [("models", "llm:1")]), "training"),
        (event("chat", [("models", "llm:1")]), "deployment"),
        (event("small", [("s3://raw", "b/part-0")], [("models", "small:1")]), "training"),
    ]:
        r = c.post("/api/v1/lineage/events", json=body, params={"job_kind": kind})
        assert r.status_code == 201, r.text


def test_events_build_a_graph_walked_up_and_down_with_edges(world: World) -> None:
    c = world.admin
    record_example(c)
    r = c.get("/api/v1/lineage/deployment/chat/upstream", params={"depth": 10, "edges": True})
    assert r.status_code == 200, r.text
    body = r.json()
    got = {(n["kind"], n["name"]): n["depth"] for n in body["items"]}
    assert got == {("model", "llm:1"): 1, ("training", "train-llm"): 2, ("dataset", "clean"): 3,
                   ("pipeline", "prep"): 4, ("dataset", "a"): 5, ("dataset", "b/part-0"): 5}
    ids = {n["id"] for n in body["items"]} | {body["node"]["id"]}
    assert body["edges"] and all(e["src"] in ids and e["dst"] in ids for e in body["edges"])
    assert [n["name"] for n in c.get("/api/v1/lineage/deployment/chat/upstream", params={"depth": 2}).json()["items"]] \
        == ["llm:1", "train-llm"]
    assert "edges" not in c.get("/api/v1/lineage/deployment/chat/upstream").json()
    # names with slashes travel percent-encoded; the namespace picks one when a name is ambiguous
    r = c.get("/api/v1/lineage/dataset/b%2Fpart-0/downstream", params={"depth": 3})
    assert {n["name"] for n in r.json()["items"]} == {"prep", "small", "clean", "small:1", "train-llm"}
    shown = c.get("/api/v1/lineage/dataset/clean", params={"namespace": "s3://ds"}).json()
    assert [n["name"] for n in shown["upstream"]] == ["prep"] and [n["name"] for n in shown["downstream"]] == ["train-llm"]


def test_impact_finds_deployments_trained_on_data_from_a_source(world: World) -> None:
    c = world.admin
    record_example(c)
    r = c.get("/api/v1/lineage/dataset/a/impact")
    assert r.status_code == 200 and [(n["name"], n["depth"]) for n in r.json()["items"]] == [("chat", 5)]
    models = c.get("/api/v1/lineage/dataset/b%2Fpart-0/impact", params={"kind": "model"}).json()["items"]
    assert sorted(n["name"] for n in models) == ["llm:1", "small:1"]
    assert c.get("/api/v1/lineage/dataset/b%2Fpart-0/impact", params={"depth": 3}).json()["items"] == []


def test_search_nodes_by_kind_name_and_namespace(world: World) -> None:
    c = world.admin
    record_example(c)
    items = c.get("/api/v1/lineage/nodes", params={"name": "LLM"}).json()["items"]
    assert {(n["kind"], n["name"]) for n in items} == {("model", "llm:1"), ("training", "train-llm")}
    items = c.get("/api/v1/lineage/nodes", params={"kind": "dataset", "namespace": "s3://raw"}).json()["items"]
    assert [n["name"] for n in items] == ["a", "b/part-0"]
    assert c.get("/api/v1/lineage/nodes", params={"name": "%"}).json()["items"] == []  # LIKE wildcards are literal


def test_unknown_nodes_bad_depth_and_bad_kinds_are_4xx_json_with_a_fix(world: World) -> None:
    c = world.admin
    record_example(c)
    r = c.get("/api/v1/lineage/dataset/nope/upstream")
    assert r.status_code == 404 and r.json()["field"] == "name" and "/lineage/nodes" in r.json()["hint"]
    for depth in (0, 65, -3):
        r = c.get("/api/v1/lineage/dataset/a/downstream", params={"depth": depth})
        assert r.status_code == 400 and r.json()["field"] == "depth" and "1..64" in r.json()["hint"], depth
    r = c.get("/api/v1/lineage/table/a/upstream")
    assert r.status_code == 400 and r.json()["field"] == "kind"
    r = c.get("/api/v1/lineage/dataset/a/impact", params={"kind": "thing"})
    assert r.status_code == 400 and r.json()["field"] == "kind"
    r = c.get("/api/v1/lineage/dataset/a/upstream", params={"limit": 0})
    assert r.status_code == 400 and r.json()["field"] == "limit"
    c.post("/api/v1/lineage/events", json=event("other", [("elsewhere", "a")]))  # 'a' in two namespaces now
    r = c.get("/api/v1/lineage/dataset/a/upstream")
    assert r.status_code == 400 and r.json()["field"] == "namespace"
    assert c.get("/api/v1/lineage/dataset/a/downstream", params={"namespace": "elsewhere"}).status_code == 200


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda b: b.pop("job"), "job"),
    (lambda b: b["job"].pop("name"), "job.name"),
    (lambda b: b.update(eventType="DONE"), "eventType"),
    (lambda b: b["inputs"][0].update(name=""), "inputs.0.name"),
    (lambda b: b.update(outputs={"not": "a list"}), "outputs"),
    (lambda b: b["run"].pop("runId"), "run.runId"),
])
def test_bad_events_are_400_naming_the_field(world: World, mutate: Any, field: str) -> None:
    body = event("prep", [("s3://raw", "a")], [("s3://ds", "clean")])
    mutate(body)
    r = world.admin.post("/api/v1/lineage/events", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and r.json()["hint"]
    assert world.admin.get("/api/v1/lineage/nodes").json()["items"] == []  # nothing half-recorded


def test_non_json_and_unknown_job_kinds_are_refused(world: World) -> None:
    r = world.admin.post("/api/v1/lineage/events", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "(body)"
    r = world.admin.post("/api/v1/lineage/events", json=event("j"), params={"job_kind": "cron"})
    assert r.status_code == 400 and r.json()["field"] == "job_kind"


def test_job_type_facet_and_failed_runs(world: World) -> None:
    c = world.admin
    body = event("train-x", [("s3://ds", "clean")], [("models", "x:1")])
    body["job"]["facets"] = {"jobType": {"_producer": "p", "_schemaURL": "s", "processingType": "BATCH",
                                         "integration": "MODELPLANE", "jobType": "TRAINING"}}
    assert c.post("/api/v1/lineage/events", json=body).json()["job"]["kind"] == "training"
    failed = event("train-y", [("s3://ds", "clean")], [("models", "y:1")], state="FAIL")
    assert c.post("/api/v1/lineage/events", json=failed, params={"job_kind": "training"}).json()["outputs"] == 0
    names = {n["name"] for n in c.get("/api/v1/lineage/dataset/clean/downstream", params={"depth": 2}).json()["items"]}
    assert names == {"train-x", "x:1", "train-y"}  # a failed run read the data but produced no model


def test_members_read_the_graph_and_record_only_their_teams_jobs(world: World) -> None:
    record_example(world.admin)
    ann = world.ann
    assert ann.get("/api/v1/lineage/dataset/a/impact").status_code == 200
    assert ann.get("/api/v1/lineage/nodes").status_code == 200
    r = ann.post("/api/v1/lineage/events", json=event("prep", [("s3://raw", "z")]))
    assert r.status_code == 403  # not a platform job of hers: only admins record for outside producers
    doc = training_doc("ann-job", queue="qa", replicas=1)
    doc["metadata"]["team"] = "a"
    assert ann.post("/api/v1/jobs", json=doc).status_code == 201
    r = ann.post("/api/v1/lineage/events", json=event("ann-job", [("s3://raw", "z")]), params={"job_kind": "training"})
    assert r.status_code == 201, r.text
    assert world.client("").get("/api/v1/lineage/nodes").status_code == 401
    entries = world.admin.get("/api/v1/audit/entries", params={"limit": 1000}).json()["items"]
    ops = [(e["entry"]["operation"], e["entry"]["outcome"]) for e in entries if e["entry"]]
    assert ("POST /api/v1/lineage/events", "denied") in ops and ("POST /api/v1/lineage/events", "succeeded") in ops


def test_every_lineage_route_has_a_rule(world: World) -> None:
    from fastapi.routing import APIRoute

    from modelplane.api.routes.lineage import router

    ops = {(m, "/api/v1" + r.path.replace(":path", "")) for r in router.routes if isinstance(r, APIRoute) for m in r.methods}
    assert len(ops) == 6 and ops <= set(RULES), sorted(ops - set(RULES))
    assert all(RULES[k].action in ("read", "write") for k in ops)


def test_the_graph_lives_in_the_platforms_database_unless_lineage_url_says_otherwise(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPLANE_LINEAGE_URL", raising=False)
    record_example(world.admin)
    tables = set(inspect(world.store.engine).get_table_names())
    assert {"lineage_nodes", "lineage_edges"} <= tables
    assert platform_lineage_url(Settings(database_url=world.store.url)) == world.store.url
    elsewhere = f"sqlite:///{tmp_path / 'lineage-elsewhere.db'}"
    monkeypatch.setenv("MODELPLANE_LINEAGE_URL", elsewhere)
    assert platform_lineage_url(Settings(database_url=world.store.url)) == elsewhere
    app = create_app(world.store, security=world.sec)
    c = TestClient(app, raise_server_exceptions=False)
    c.headers.update(world.admin.headers)
    assert c.post("/api/v1/lineage/events", json=event("solo", [("s3://raw", "q")])).status_code == 201
    other = LineageStore(elsewhere)
    assert other.find("pipeline", "solo", "modelplane").name == "solo"
    other.engine.dispose()
    app.state.lineage.engine.dispose()
