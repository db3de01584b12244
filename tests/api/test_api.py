"""The HTTP API in process (FastAPI's TestClient) on both databases: auth, errors, jobs, queues."""

import pytest
from fastapi.testclient import TestClient

from modelplane.api.app import create_app
from modelplane.api.auth import ensure_admin_token
from modelplane.api.security import release_security
from tests.helpers import training_doc

CLUSTER = {
    "apiVersion": "modelplane/v1",
    "kind": "Cluster",
    "spec": {
        "nodes": [
            {"name": "a100-0", "accelerators": {"model": "NVIDIA-A100", "count": 8}, "cpu": "64", "memory": "512Gi"},
            {"name": "npu-0", "accelerators": {"model": "Ascend-910B", "count": 4},
             "taints": [{"key": "npu", "value": "y", "effect": "NoSchedule"}]},
        ],
        "queues": [{"name": "training", "kind": "training", "quota": {"NVIDIA-A100": 8}}],
    },
}


@pytest.fixture
def admin_token(store, tmp_path):
    """The first admin's API key (the security services' keys live in tmp_path/keys)."""
    token = ensure_admin_token(store, tmp_path, fast_hashing=True)
    yield token
    release_security(store)


@pytest.fixture
def client(store, admin_token):
    c = TestClient(create_app(store), raise_server_exceptions=False)
    c.headers["Authorization"] = f"Bearer {admin_token}"
    assert c.post("/api/v1/cluster/import", json=CLUSTER).status_code == 200
    return c


def test_every_call_needs_a_token(store, admin_token):
    c = TestClient(create_app(store))
    assert c.get("/healthz").status_code == 200
    r = c.get("/api/v1/jobs")
    assert r.status_code == 401 and "bearer token" in r.json()["hint"]
    r = c.get("/api/v1/jobs", headers={"Authorization": "Bearer mp_wrong"})
    assert r.status_code == 401 and r.json()["hint"]


def test_admin_token_is_created_once_and_stored_hashed(store, admin_token):
    import hashlib

    from sqlalchemy import select

    from modelplane.security.identity.sql import api_keys

    assert admin_token and admin_token.startswith("mpk_")
    assert ensure_admin_token(store) is None
    with store.engine.connect() as conn:
        rows = conn.execute(select(api_keys)).all()
    assert len(rows) == 1 and rows[0].account == "admin"
    secret = admin_token.split("_", 2)[2]
    assert rows[0].secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(rows)


def test_apply_get_list_cancel(client):
    r = client.post("/api/v1/jobs", json=training_doc("a"))
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "Pending"
    assert client.post("/api/v1/jobs", json=training_doc("a")).json()["unchanged"] is True
    got = client.get("/api/v1/jobs/a").json()
    assert got["events"][0]["reason"] == "Created" and got["manifest"]["kind"] == "TrainingJob"
    assert [j["name"] for j in client.get("/api/v1/jobs", params={"state": "Pending"}).json()["items"]] == ["a"]
    r = client.delete("/api/v1/jobs/a")
    assert r.status_code == 200 and r.json()["cancelRequested"] is True
    r = client.delete("/api/v1/jobs/a", params={"purge": True})
    assert r.status_code == 409  # not finished yet


def test_idempotency_key_prevents_duplicates(client):
    h = {"Idempotency-Key": "abc"}
    a = client.post("/api/v1/jobs", json=training_doc("a"), headers=h).json()
    b = client.post("/api/v1/jobs", json=training_doc("a"), headers=h).json()
    assert a["id"] == b["id"]
    assert len(client.get("/api/v1/jobs").json()["items"]) == 1


@pytest.mark.parametrize(
    ("doc", "status", "field", "words"),
    [
        (training_doc("a", queue="nope"), 404, "", "queue 'nope' does not exist"),
        ({**training_doc("a"), "kind": "CronJob"}, 422, "kind", "unknown kind"),
        ({"apiVersion": "modelplane/v1"}, 422, "kind", "unknown kind"),
        (training_doc("a", accelerators=16), 422, "spec", "no node can ever run this job"),
        (training_doc("a", nodeSelector={"gpu": "h100"}), 422, "spec", "no node can ever run"),
        (training_doc("a", affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "modelplane.io/accelerator", "operator": "In", "values": ["Ascend-910B"]}]}]}}}),
         422, "spec", "tolerations"),
    ],
)
def test_bad_input_is_a_4xx_with_a_fix(client, doc, status, field, words):
    r = client.post("/api/v1/jobs", json=doc)
    assert r.status_code == status, r.text
    body = r.json()
    assert words in body["message"] and body["hint"]
    if field:
        assert body["field"].startswith(field)


def test_duplicate_name_with_other_spec_is_409(client):
    client.post("/api/v1/jobs", json=training_doc("a"))
    r = client.post("/api/v1/jobs", json=training_doc("a", replicas=1))
    assert r.status_code == 409 and r.json()["field"] == "metadata.name"


def test_malformed_bodies_never_500(client):
    for body in (b"{not json", b"[]", b'"x"'):
        r = client.post("/api/v1/jobs", content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert r.json()["message"]
    r = client.get("/api/v1/jobs", params={"state": "Sleeping"})
    assert r.status_code == 422 and "Pending" in r.json()["hint"]
    r = client.get("/api/v1/jobs", params={"after": "garbage"})
    assert r.status_code == 422


def test_nodes_and_queues(client):
    assert client.post("/api/v1/nodes/a100-0/cordon").json()["state"] == "Cordoned"
    assert client.post("/api/v1/nodes/a100-0/uncordon").json()["state"] == "Ready"
    assert client.post("/api/v1/nodes/ghost/heartbeat").status_code == 404
    q = client.get("/api/v1/queues/training").json()
    assert q["quota"] == {"NVIDIA-A100": 8.0} and q["used"] == {}
    r = client.post("/api/v1/queues", json={"name": "Bad Name"})
    assert r.status_code == 422 and r.json()["field"] == "name"


def test_openapi_document_lists_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/v1/jobs", "/api/v1/jobs/{name}", "/api/v1/jobs/{name}/events", "/api/v1/jobs/{name}/logs",
              "/api/v1/nodes", "/api/v1/nodes/{name}/drain", "/api/v1/queues", "/api/v1/cluster/import"):
        assert p in paths


def test_metrics_need_a_token_and_report_the_pool(client, store):
    from fastapi.testclient import TestClient

    assert TestClient(create_app(store)).get("/metrics").status_code == 401
    client.post("/api/v1/jobs", json=training_doc("a"))
    text = client.get("/metrics").text
    assert 'modelplane_jobs{queue="training",state="Pending"} 1.0' in text
    assert 'modelplane_accelerators{model="NVIDIA-A100",status="idle"} 8.0' in text
    assert 'modelplane_queue_quota_accelerators{model="NVIDIA-A100",queue="training"} 8.0' in text
    assert "modelplane_http_request_duration_seconds_bucket" in text


def test_cost_report_through_the_api(client, store):
    from modelplane.core.job import JobState
    from modelplane.core.placement import Placement, TaskAssignment

    now = {"t": 1_000_000.0}
    store.clock = lambda: now["t"]
    job = store.create_job(training_doc("paid", replicas=1))
    p = Placement(job.id, (TaskAssignment("worker", 0, 0, "a100-0", 1000, 1024, (0, 1), 1000),))
    store.transition_job(job.id, JobState.ADMITTED, "Scheduled", placement=p)
    store.transition_job(job.id, JobState.RUNNING, "Started")
    now["t"] += 3600
    store.transition_job(job.id, JobState.SUCCEEDED, "Completed")
    body = client.get("/api/v1/cost", params={"since_seconds": 86400}).json()
    assert body["byJob"]["paid"]["gpuHours"] == 2.0
    assert body["byTeam"]["default"]["gpuHours"] == 2.0 and body["byQueue"]["training"]["gpuHours"] == 2.0
    assert client.get("/api/v1/cost", params={"since_seconds": -1}).status_code == 422
