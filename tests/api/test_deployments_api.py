"""Deployment routes in process (TestClient) on both databases: apply through /jobs, read, list,
delete, and the gateway's answers when a deployment is unknown or has no replica."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from modelplane.api.app import create_app
from modelplane.api.auth import ensure_admin_token
from modelplane.api.security import release_security
from tests.control.test_deployments import MODEL, deployment_doc
from tests.helpers import gpu_node, queue


@pytest.fixture
def client(store, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPLANE_MODEL_REGISTRY_URL", str(tmp_path / "registry"))
    token = ensure_admin_token(store, tmp_path, fast_hashing=True)
    store.upsert_node(gpu_node("n1"))
    store.upsert_queue(queue("inference", team="product"))
    with TestClient(create_app(store), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        yield c
    release_security(store)


def test_applying_an_inference_deployment_creates_a_deployment_not_a_job(client):
    doc = deployment_doc(autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetConcurrency": 2})
    r = client.post("/api/v1/jobs", json=doc)
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["kind"], body["name"], body["queue"], body["state"]) == ("InferenceDeployment", "digits",
                                                                         "inference", "Pending")
    assert client.get("/api/v1/jobs").json()["items"] == []
    assert [d["name"] for d in client.get("/api/v1/deployments").json()["items"]] == ["digits"]
    one = client.get("/api/v1/deployments/digits").json()
    assert one["manifest"] == doc and one["desired"] == 1 and one["ready"] == 0
    assert one["revision"]["number"] == 1 and len(one["revision"]["hash"]) == 10
    again = client.post("/api/v1/jobs", json=doc)
    assert again.status_code == 200 and again.json()["unchanged"] is True


def test_applying_a_changed_deployment_updates_it_in_place_or_as_a_new_revision(client):
    auto = {"minReplicas": 1, "maxReplicas": 3, "targetConcurrency": 2}
    assert client.post("/api/v1/jobs", json=deployment_doc(autoscaling=auto)).status_code == 201
    first = client.get("/api/v1/deployments/digits").json()["revision"]
    # Replicas, autoscaling, guards, strategy: in place, same revision.
    doc = deployment_doc(replicas=2, autoscaling=auto | {"maxReplicas": 5})
    doc["spec"] |= {"guards": {"input": ["injection"]}, "strategy": {"maxSurge": "50%", "maxUnavailable": 1}}
    r = client.post("/api/v1/jobs", json=doc)
    assert r.status_code == 200 and r.json()["configured"] is True and r.json()["rollout"] is False, r.text
    d = client.get("/api/v1/deployments/digits").json()
    assert d["revision"]["number"] == 1 and d["revision"]["hash"] == first["hash"] and d["manifest"] == doc
    # What a replica runs changed: a new revision.
    doc["spec"]["template"]["env"] = {"OMP_NUM_THREADS": "1"}
    r = client.post("/api/v1/deployments", json=doc)
    assert r.status_code == 200 and r.json()["rollout"] is True and r.json()["revision"]["number"] == 2
    assert client.post("/api/v1/deployments", json=doc).json()["unchanged"] is True
    # Fields that cannot change, an unknown model, a strategy that cannot progress: refused, nothing changed.
    moved = client.post("/api/v1/deployments", json=doc | {"metadata": {"name": "digits", "team": "research"}})
    assert moved.status_code == 409 and moved.json()["field"] == "metadata.team" and moved.json()["hint"]
    ghost = client.post("/api/v1/deployments", json=doc | {"spec": doc["spec"] | {"model": "registry://ghost:1"}})
    assert ghost.status_code == 404 and ghost.json()["field"] == "spec.model" and "ghost" in ghost.json()["message"]
    stuck = client.post("/api/v1/deployments",
                        json=doc | {"spec": doc["spec"] | {"strategy": {"maxSurge": 0, "maxUnavailable": 0}}})
    assert stuck.status_code == 422 and "both be 0" in stuck.json()["message"]
    assert client.get("/api/v1/deployments/digits").json()["revision"]["number"] == 2


def test_reapplying_after_a_promotion_rolls_out_the_new_version(client):
    """``digits@production`` is pinned to the version it names at apply time: the same manifest
    applied again after a promotion is a new revision; applied again without one, a no-op."""
    onnx = MODEL.read_bytes()
    assert client.post("/api/v1/models", params={"name": "digits", "stage": "production"}, content=onnx).status_code == 201
    doc = deployment_doc(model="registry://digits@production")
    assert client.post("/api/v1/deployments", json=doc).status_code == 201
    d = client.get("/api/v1/deployments/digits").json()
    assert (d["revision"]["number"], d["revision"]["model"]) == (1, "digits:1") and d["manifest"] == doc
    assert client.post("/api/v1/deployments", json=doc).json()["unchanged"] is True
    assert client.post("/api/v1/models", params={"name": "digits", "stage": "production"}, content=onnx).status_code == 201
    r = client.post("/api/v1/deployments", json=doc)
    assert r.status_code == 200 and r.json()["rollout"] is True
    assert (r.json()["revision"]["number"], r.json()["revision"]["model"]) == (2, "digits:2")
    # The same version named explicitly is the same revision.
    r = client.post("/api/v1/deployments", json=doc | {"spec": doc["spec"] | {"model": "registry://digits:2"}})
    assert r.json()["configured"] is True and r.json()["rollout"] is False


def test_bad_deployments_are_refused_with_the_field_named(client):
    doc = deployment_doc(autoscaling={"minReplicas": 3, "maxReplicas": 2})
    r = client.post("/api/v1/deployments", json=doc)
    assert r.status_code == 422 and r.json()["field"] == "spec.autoscaling"
    r = client.post("/api/v1/deployments", json=deployment_doc(name="x" * 60))
    assert r.status_code == 422 and r.json()["field"] == "metadata.name"
    r = client.post("/api/v1/deployments", json=deployment_doc() | {"spec": {**deployment_doc()["spec"], "queue": "q"}})
    assert r.status_code == 404 and "queue 'q'" in r.json()["message"]


def test_unknown_deployment_is_a_404_json_and_one_without_replicas_a_503(client):
    r = client.post("/api/v1/deployments/ghost/infer", json={"inputs": [[0.0] * 64]})
    assert r.status_code == 404 and "ghost" in r.json()["message"] and r.json()["hint"]
    assert client.get("/api/v1/deployments/ghost").status_code == 404
    assert client.post("/api/v1/deployments", json=deployment_doc()).status_code == 201
    client.app.state.deployment_gateway.cold_start_timeout_s = 0.3
    r = client.post("/api/v1/deployments/digits/infer", json={"inputs": [[0.0] * 64]})
    assert r.status_code == 503 and "no ready replica" in r.json()["message"]
    assert "describe deployment digits" in r.json()["hint"]


def test_delete_marks_the_deployment_deleting(client):
    assert client.post("/api/v1/deployments", json=deployment_doc()).status_code == 201
    r = client.delete("/api/v1/deployments/digits")
    assert r.status_code == 200 and r.json()["state"] == "Deleting"
    again = client.post("/api/v1/deployments", json=deployment_doc())
    assert again.status_code == 409 and "being deleted" in again.json()["message"]


def test_models_are_registered_promoted_and_listed(client):
    onnx = MODEL.read_bytes()
    r = client.post("/api/v1/models", params={"name": "digits"}, content=onnx,
                    headers={"content-type": "application/octet-stream"})
    assert r.status_code == 201 and (r.json()["ref"], r.json()["stage"]) == ("digits:1", "staging"), r.text
    r = client.post("/api/v1/models", params={"name": "digits", "stage": "production"}, content=onnx)
    assert r.status_code == 201 and (r.json()["ref"], r.json()["stage"]) == ("digits:2", "production")
    r = client.post("/api/v1/models", params={"name": "digits"}, content=b"not onnx")
    assert r.status_code == 422 and "validation" in r.json()["message"]
    r = client.post("/api/v1/models", params={"name": "Bad Name"}, content=onnx)
    assert r.status_code == 422 and r.json()["field"] == "name"
    assert client.get("/api/v1/models").json()["items"] == [
        {"name": "digits", "latest": 2, "versions": 2, "production": 2}]
    r = client.post("/api/v1/models/digits/versions/1/stage", params={"stage": "production"})
    assert r.status_code == 200 and r.json()["stage"] == "production"
    stages = {v["ref"]: v["stage"] for v in client.get("/api/v1/models/digits").json()["items"]}
    assert stages == {"digits:1": "production", "digits:2": "archived"}
    assert client.get("/api/v1/models/ghost").status_code == 404


def test_a_full_gateway_answers_429_with_retry_after(client, store):
    """A real replica that holds each request ~300 ms (its batcher waits to fill a batch), and a
    gateway admitting one request with no waiting room: concurrent callers beyond it get 429."""
    from concurrent.futures import ThreadPoolExecutor

    from modelplane.serve.batching import BatchingConfig
    from modelplane.serve.launch import start_replica

    proc, url = start_replica("digits", str(MODEL), batching=BatchingConfig(64, 0.3, 1024))
    try:
        serving = client.app.state.deployment_gateway
        serving.max_in_flight, serving.max_waiting = 1, 0
        assert client.post("/api/v1/deployments", json=deployment_doc()).status_code == 201
        d = store.get_deployment("digits")
        store.update_deployment("digits", status=d.status | {"endpoints": [url]})  # as the controller would
        row = [[0.5] * 64]
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: client.post("/api/v1/deployments/digits/infer", json={"inputs": row}),
                                    range(6)))
        codes = sorted(a.status_code for a in answers)
        assert 200 in codes and 429 in codes and set(codes) <= {200, 429}, codes
        full = next(a for a in answers if a.status_code == 429)
        assert int(full.headers["retry-after"]) >= 1 and full.json()["error"] == "Overloaded"
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_gateway_takes_changed_guards_in_place(client):
    """Guards are an in-place change: the API's gateway swaps them without dropping the deployment's
    replica list (the regex PII engine: no model to load)."""
    import time

    serving = client.app.state.deployment_gateway
    assert client.post("/api/v1/deployments", json=deployment_doc()).status_code == 201
    doc = deployment_doc()
    doc["spec"]["guards"] = {"output": ["pii"], "piiEngine": "regex", "denyList": ["nightingale"]}
    deadline = time.time() + 10
    while "digits" not in serving.gateway.deployments():
        assert time.time() < deadline, "the gateway never saw the deployment"
        time.sleep(0.1)
    assert serving.gateway._get("digits").config.guards is None
    r = client.post("/api/v1/deployments", json=doc)
    assert r.status_code == 200 and r.json()["rollout"] is False
    while (guards := serving.gateway._get("digits").config.guards) is None:
        assert time.time() < deadline, "the gateway kept the old guards"
        time.sleep(0.1)
    assert [g.name for g in guards.output_guards] == ["pii"]
