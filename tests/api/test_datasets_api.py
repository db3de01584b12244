"""Sensitive datasets through the HTTP API on both databases: the catalog and who may write it, node
attestation with real DCAP quotes, secure key release to jobs placed by the real scheduler (with
the credential the job controller mints), the refusal at apply, and every decision in the audit log."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from modelplane.api.app import create_app
from modelplane.api.security import RULES, ApiSecurity, KindAwareRiskScorer, bootstrap_admin
from modelplane.control.scheduling import SchedulerController
from modelplane.data.sensitive import DataKey
from modelplane.platform import make_scheduler
from modelplane.security.risk import RiskConfig
from modelplane.store import Store
from modelplane.store import sensitive_catalog as catalog
from tests.helpers import training_doc
from tests.privacy.test_tee import EXPECTED, VECTORS

RISK = RiskConfig(no_device_points=0, odd_hour_points=0, new_source_points=0)
DS = "file:///data/patients"
T0 = max(c["verify_at_unix"] for c in EXPECTED.values()) + 60  # inside the collateral's validity window
CLUSTER = {
    "apiVersion": "modelplane/v1", "kind": "Cluster",
    "spec": {"nodes": [{"name": "tdx-0", "cpu": "8", "memory": "32Gi", "tee": "tdx"},
                       {"name": "sgx-0", "cpu": "8", "memory": "32Gi", "tee": "sgx"},
                       {"name": "plain-0", "cpu": "8", "memory": "32Gi"}],
             "queues": [{"name": "q", "kind": "training", "team": "research", "quota": {"*": 100}}]},
}


def quote_body(name: str) -> dict[str, Any]:
    case = EXPECTED[name]
    return {"quote": base64.b64encode((VECTORS / name).read_bytes()).decode(),
            "collateral": (VECTORS / case["collateral"]).read_text()}


def path(uri: str) -> str:
    return "/api/v1/datasets/" + quote(uri, safe="")


class World:
    def __init__(self, db_url: str, tmp_path: Path) -> None:
        self.now = float(T0)
        self.store = Store(db_url, clock=lambda: self.now)
        self.sec = ApiSecurity(self.store, tmp_path, fast_hashing=True, risk=KindAwareRiskScorer(RISK))
        self.app = create_app(self.store, security=self.sec)
        self.admin = self.client(bootstrap_admin(self.sec, time.time()) or "")
        assert self.admin.post("/api/v1/cluster/import", json=CLUSTER).status_code == 200
        assert self.admin.post("/api/v1/teams", json={"name": "research"}).status_code == 201
        assert self.admin.post("/api/v1/service-accounts", json={"name": "owner", "team": "research"}).status_code == 201
        key = self.admin.post("/api/v1/service-accounts/owner/api-keys",
                              json={"scopes": ["datasets:read", "datasets:write"]}).json()["key"]
        self.owner = self.client(key)
        self.scheduler = SchedulerController(self.store, make_scheduler("default"), lambda: self.now)

    def client(self, token: str) -> TestClient:
        c = TestClient(self.app, raise_server_exceptions=False)
        if token:
            c.headers["Authorization"] = f"Bearer {token}"
        return c

    def place(self, doc: dict[str, Any]) -> tuple[str, str]:
        """Submit, let the real scheduler place it, mint the launch credential the job controller would."""
        r = self.admin.post("/api/v1/jobs", json=doc)
        assert r.status_code == 201, r.text
        self.scheduler.reconcile()
        job = self.store.get_job(doc["metadata"]["name"])
        assert job.placement is not None, job.pending_reason
        return job.id, catalog.mint_job_token(self.store, job.id)

    def release(self, token: str, uri: str = DS) -> Any:
        return self.client(token).post("/api/v1/datasets/key-release", json={"uri": uri})


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    w = World(db_url, tmp_path)
    yield w
    w.sec.close()
    w.store.close()


def job(name: str, tee: str | None = None, datasets: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    extra: dict[str, Any] = {"datasets": datasets or []}
    if tee:
        extra["tee"] = tee
    return training_doc(name, queue="q", replicas=1, accelerators=0, **extra, **spec) | {
        "metadata": {"name": name, "team": "research"}}


def test_the_migration_creates_the_tables(world: World) -> None:
    tables = set(inspect(world.store.engine).get_table_names())
    assert {"sensitive_datasets", "job_credentials", "node_attestations"} <= tables


def test_the_owning_team_protects_a_dataset_and_the_key_is_stored_wrapped(world: World) -> None:
    key = DataKey.generate()
    r = world.owner.put(path(DS), json=key.to_json())
    assert r.status_code == 201, r.text
    assert r.json() | {"createdAt": 0} == {"uri": DS, "sensitive": True, "team": "research", "keyId": key.key_id,
                                           "createdBy": "owner", "createdAt": 0, "created": True}
    assert world.owner.put(path(DS), json=key.to_json()).status_code == 200  # the same key again: no-op
    r = world.owner.put(path(DS), json=DataKey.generate().to_json())
    assert r.status_code == 409 and "already sensitive" in r.json()["message"]
    assert world.owner.get(path(DS)).json()["keyId"] == key.key_id
    assert world.owner.get(path("/data/public")).json() == {"uri": "file:///data/public", "sensitive": False}
    assert [d["uri"] for d in world.owner.get("/api/v1/datasets").json()["items"]] == [DS]
    stored = catalog.get(world.store, DS)
    assert stored is not None and base64.b64encode(key.key).decode() not in stored.wrapped_key
    assert "dataKey" not in world.owner.get(path(DS)).json()
    # another team's dataset is not theirs to write; a bad key or URI is a 4xx naming the field
    r = world.owner.put(path("/data/x"), json=key.to_json() | {"team": "other"})
    assert r.status_code == 403
    r = world.owner.put(path("/data/y"), json={"keyId": key.key_id, "dataKey": "AAAA"})
    assert r.status_code == 400 and r.json()["field"] == "dataKey"
    r = world.owner.put(path("relative/x"), json=DataKey.generate().to_json())
    assert r.status_code == 400 and r.json()["field"] == "uri"
    r = world.owner.put(path("/data/z"), json=DataKey.generate().to_json() | {"sensitive": False})
    assert r.status_code == 422 and r.json()["field"] == "sensitive"


def test_node_attestations_are_verified_with_real_quotes_and_recorded(world: World) -> None:
    r = world.admin.post("/api/v1/nodes/tdx-0/attestation", json=quote_body("sample/tdx_quote"))
    assert r.status_code == 201, r.text
    assert r.json()["ok"] and r.json()["tee"] == "tdx" and r.json()["status"] == "UpToDate"
    assert r.json()["verified_at"] == T0
    bad = quote_body("sample/sgx_quote") | {"collateral": quote_body("sample/tdx_quote")["collateral"]}
    r = world.admin.post("/api/v1/nodes/sgx-0/attestation", json=bad)
    assert r.status_code == 201 and not r.json()["ok"] and r.json()["error"]
    assert not world.admin.get("/api/v1/nodes/sgx-0/attestation").json()["ok"]  # a failure is recorded too
    assert world.admin.get("/api/v1/nodes/plain-0/attestation").status_code == 404
    assert world.admin.post("/api/v1/nodes/ghost/attestation", json=quote_body("sample/tdx_quote")).status_code == 404
    r = world.admin.post("/api/v1/nodes/tdx-0/attestation", json={"quote": "***", "collateral": "{}"})
    assert r.status_code == 422 and r.json()["field"] == "quote"
    assert world.owner.post("/api/v1/nodes/tdx-0/attestation",
                            json=quote_body("sample/tdx_quote")).status_code == 403  # node writes are admins'


def test_keys_are_released_only_to_confidential_jobs_on_fresh_attested_nodes(world: World) -> None:
    key = DataKey.generate()
    assert world.owner.put(path(DS), json=key.to_json()).status_code == 201
    for node, name in (("tdx-0", "sample/tdx_quote"), ("sgx-0", "sample/sgx_quote")):
        assert world.admin.post(f"/api/v1/nodes/{node}/attestation", json=quote_body(name)).json()["ok"]

    # submission: declaring a sensitive dataset without spec.tee is refused, naming it and the fix
    r = world.admin.post("/api/v1/jobs", json=job("leaky", datasets=["/data/patients/"]))
    assert r.status_code == 422, r.text
    assert r.json()["message"] == f"dataset {DS} is sensitive; job leaky is not confidential: set spec.tee"
    assert r.json()["field"] == "spec.tee" and "tee: any" in r.json()["hint"]
    r = world.admin.post("/api/v1/jobs", json=job("rel", tee="any", datasets=["data/patients"]))
    assert r.status_code == 422 and r.json()["field"] == "spec.datasets.0"

    _, tdx_token = world.place(job("conf-tdx", tee="tdx", datasets=[DS]))
    r = world.release(tdx_token)
    assert r.status_code == 200, r.text
    assert DataKey.from_json(r.json()) == key
    r = world.release(tdx_token, "/data/public")
    assert r.status_code == 404 and "not sensitive" in r.json()["message"]

    _, plain_token = world.place(job("plain-reader"))  # undeclared and not confidential
    r = world.release(plain_token)
    assert r.status_code == 403
    assert r.json()["message"] == f"dataset {DS} is sensitive; job plain-reader is not confidential: set spec.tee"

    _, undeclared = world.place(job("conf-undeclared", tee="tdx"))
    assert "did not declare" in world.release(undeclared).json()["message"]

    for bad in ("", "mpj_forged", "not-a-job-token"):
        r = world.release(bad)
        assert r.status_code == 401 and "job" in r.json()["message"]

    # a day and more later the sgx node has not attested again: stale; the tdx node re-attests
    _, sgx_token = world.place(job("conf-sgx", tee="sgx", datasets=[DS]))
    assert world.release(sgx_token).status_code == 200
    world.now += 2 * 86400
    r = world.release(sgx_token)
    assert r.status_code == 403 and r.json()["message"].startswith("node sgx-0 attestation is stale"), r.text
    assert world.release(tdx_token).status_code == 403
    assert world.admin.post("/api/v1/nodes/tdx-0/attestation", json=quote_body("sample/tdx_quote")).json()["ok"]
    assert world.release(tdx_token).status_code == 200

    # a new launch gets a new credential; the old one is dead. A finished job gets nothing.
    tdx_job = world.store.get_job("conf-tdx")
    fresh = catalog.mint_job_token(world.store, tdx_job.id)
    assert world.release(tdx_token).status_code == 401 and world.release(fresh).status_code == 200
    assert world.admin.delete("/api/v1/jobs/conf-tdx").status_code == 200  # cancelled: no more keys
    assert "not running" in world.release(fresh).json()["message"]

    # every release and refusal is in the audit log, with its reason
    items = world.admin.get("/api/v1/audit/entries", params={"limit": 1000}).json()["items"]
    entries = [i["entry"] for i in items if i["entry"]]
    releases = [e for e in entries if e["operation"] == "POST /api/v1/datasets/key-release"]
    outcomes = [(e["operator"], e["outcome"]) for e in releases]
    assert ("job:conf-tdx", "succeeded") in outcomes and ("job:plain-reader", "denied") in outcomes
    assert ("unknown", "denied") in outcomes
    stale = next(e for e in releases if "stale" in e["details"].get("reason", ""))
    assert stale["resource"] == f"Dataset/{DS}" and stale["details"]["nodes"] == "sgx-0"
    assert len(releases) == 14  # every call above, none lost


def test_confidential_jobs_are_placed_only_on_nodes_with_a_fresh_verified_attestation(world: World) -> None:
    def submit(name: str, tee: str) -> Any:
        assert world.admin.post("/api/v1/jobs", json=job(name, tee=tee)).status_code == 201
        world.scheduler.reconcile()
        return world.store.get_job(name)

    # Declared TEE nodes, none attested yet: the job waits and says why.
    waiting = submit("conf-early", "any")
    assert waiting.placement is None and "TEE (verified attestation)" in (waiting.pending_reason or "")
    # A failed attestation does not count either.
    bad = quote_body("sample/sgx_quote") | {"collateral": quote_body("sample/tdx_quote")["collateral"]}
    assert not world.admin.post("/api/v1/nodes/sgx-0/attestation", json=bad).json()["ok"]
    world.scheduler.reconcile()
    assert world.store.get_job("conf-early").placement is None
    # Once tdx-0's quote verifies, the waiting job goes there and only there.
    assert world.admin.post("/api/v1/nodes/tdx-0/attestation", json=quote_body("sample/tdx_quote")).json()["ok"]
    world.scheduler.reconcile()
    placed = world.store.get_job("conf-early").placement
    assert placed is not None and placed.nodes == ["tdx-0"]
    assert submit("conf-sgx", "sgx").placement is None  # the sgx node's attestation failed
    assert submit("plain", "").placement is not None  # jobs without spec.tee are unaffected
    # Two days on, the attestation is stale: a new confidential job waits again.
    world.now += 2 * 86400
    assert submit("conf-late", "tdx").placement is None


def test_every_dataset_route_is_classified(world: World) -> None:
    """A route missing from RULES is closed to everyone: each new one has its rule (OpenAPI paths)."""
    ops = {(m.upper(), p) for p, item in world.app.openapi()["paths"].items() for m in item
           if p.startswith("/api/v1/datasets") or p.endswith("/attestation")}
    assert len(ops) == 6 and ops <= set(RULES), sorted(ops - set(RULES))
