"""Fuzz every operation of the OpenAPI document (schemathesis, offline, in process) on both databases:
never a 5xx, and nothing of team a's ever reaches a member of team b."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

try:
    import schemathesis
    from hypothesis import HealthCheck, settings
except ImportError as exc:  # fail loudly: the fuzz run is part of the suite
    raise ImportError("schemathesis is needed for this test: .venv/bin/pip install schemathesis") from exc

from modelplane.api.app import create_app
from modelplane.api.security import ApiSecurity, bootstrap_admin
from tests.helpers import training_doc

SECRET_JOB = "zz-team-a-secret-job"
PASSWORD = "correct horse battery"
CLUSTER = {
    "apiVersion": "modelplane/v1",
    "kind": "Cluster",
    "spec": {
        "nodes": [{"name": "a100-0", "accelerators": {"model": "NVIDIA-A100", "count": 8}}],
        "queues": [{"name": "qa", "kind": "training", "team": "a", "quota": {"NVIDIA-A100": 8}}],
    },
}


@dataclass
class Fuzz:
    app: Any
    admin: str
    member_b: str


@pytest.fixture
def fuzz(store, tmp_path) -> Iterator[Fuzz]:
    from fastapi.testclient import TestClient

    sec = ApiSecurity(store, tmp_path, fast_hashing=True)
    app = create_app(store, security=sec)
    admin = bootstrap_admin(sec, time.time()) or ""
    c = TestClient(app)
    c.headers["Authorization"] = f"Bearer {admin}"
    assert c.post("/api/v1/cluster/import", json=CLUSTER).is_success
    for team in ("a", "b"):
        assert c.post("/api/v1/teams", json={"name": team}).is_success
    assert c.post("/api/v1/users", json={"name": "bob", "team": "b", "role": "member", "password": PASSWORD}).is_success
    doc = training_doc(SECRET_JOB, queue="qa", replicas=1)
    doc["metadata"]["team"] = "a"
    assert c.post("/api/v1/jobs", json=doc).is_success
    r = TestClient(app).post("/api/v1/auth/login", json={"name": "bob", "password": PASSWORD})
    yield Fuzz(app, admin, r.json()["access_token"])
    sec.close()


def test_fuzz_every_operation_never_5xx_and_never_leaks(fuzz: Fuzz) -> None:
    """Bounded examples per operation, each sent as a member of team b and as the admin."""
    from hypothesis import given

    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz.app)
    seen = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        seen += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: Any) -> None:
            as_member = case.call(headers={"Authorization": f"Bearer {fuzz.member_b}"})
            assert as_member.status_code < 500, (case.method, case.formatted_path, as_member.text)
            if as_member.status_code < 300:
                assert SECRET_JOB not in as_member.text, (case.method, case.formatted_path, as_member.text)
            as_admin = case.call(headers={"Authorization": f"Bearer {fuzz.admin}"})
            assert as_admin.status_code < 500, (case.method, case.formatted_path, as_admin.text)

        run()
    assert seen >= 40  # every route of the document was fuzzed
