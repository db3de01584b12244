"""The console's deployments page: the table from the store, and replicas, load and latency over time
from what the API process's gateway saw, scoped to the viewer's team, through the real guard."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelplane.api.app import create_app
from modelplane.api.routes.deployments import DeploymentGateway, LoadPoint
from modelplane.api.security import ApiSecurity, KindAwareRiskScorer, bootstrap_admin
from modelplane.security.risk import RiskConfig
from modelplane.store import Store
from tests.control.test_deployments import deployment_doc
from tests.helpers import gpu_node, queue

PASSWORD = "correct horse battery"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    store = Store(f"sqlite:///{tmp_path / 'modelplane.db'}")
    sec = ApiSecurity(store, tmp_path, fast_hashing=True,
                      risk=KindAwareRiskScorer(RiskConfig(no_device_points=0, odd_hour_points=0, new_source_points=0)))
    app = create_app(store, security=sec)
    store.upsert_node(gpu_node("n1"))
    store.upsert_queue(queue("inference", team="product"))
    store.upsert_queue(queue("other-q", team="other"))
    store.create_deployment(deployment_doc("digits"))
    other = deployment_doc("secret-model")
    other["metadata"]["team"] = "other"
    other["spec"]["queue"] = "other-q"
    store.create_deployment(other)
    yield app, bootstrap_admin(sec, time.time()) or ""
    sec.close()
    store.close()


def client(app: Any) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, client=("10.0.0.1", 40000), follow_redirects=False)


def test_deployments_page_draws_replicas_load_and_latency_over_time(app: tuple[Any, str]) -> None:
    application, admin_key = app
    serving: DeploymentGateway = application.state.deployment_gateway
    now = time.time()
    # A burst seen by the gateway: replicas 1 -> 3 -> 1, load up then down.
    ready = [1] * 10 + [2] * 10 + [3] * 20 + [1] * 10
    serving.history["digits"] = deque(
        LoadPoint(now - 50 + i, r, r if i < 40 else 1, 8.0 * (10 <= i < 40), 2.0 * (10 <= i < 20),
                  120.0 * (10 <= i < 40), 4.0 + i % 3) for i, r in enumerate(ready))
    c = client(application)
    assert c.post("/console/login", data={"api_key": admin_key}).status_code == 303
    page = c.get("/console/deployments", params={"minutes": 5})
    assert page.status_code == 200, page.text
    assert 'data-deployment="digits"' in page.text and 'data-deployment="secret-model"' in page.text
    chart = _svg(page.text, "replicas-digits")
    lines = {p.get("data-series"): p.get("points", "").split() for p in chart.iter(SVG + "polyline")}
    assert set(lines) == {"ready", "desired"} and len(lines["ready"]) == len(ready)
    ys = [float(pt.split(",")[1]) for pt in lines["ready"]]
    assert min(ys) == ys[20] and ys[0] == ys[-1]  # the peak (3 replicas) is the highest point; back to 1
    load = _svg(page.text, "load-digits")
    assert {p.get("data-series") for p in load.iter(SVG + "polyline")} == {"requests/s", "in flight", "waiting"}
    assert _svg(page.text, "latency-digits") is not None
    # The deployment without traffic says so instead of drawing empty axes silently.
    assert "no traffic seen by this API process" in page.text.split('data-testid="deployment-secret-model"')[1]
    # The htmx fragment refreshes the same content.
    frag = c.get("/console/deployments/charts", params={"minutes": 5})
    assert frag.status_code == 200 and 'data-testid="replicas-digits"' in frag.text
    assert c.get("/console/deployments", params={"minutes": 0}).status_code == 422


def test_members_see_only_their_teams_deployments(app: tuple[Any, str]) -> None:
    application, admin_key = app
    api = client(application)
    api.headers["Authorization"] = f"Bearer {admin_key}"
    assert api.post("/api/v1/teams", json={"name": "product"}).status_code == 201
    r = api.post("/api/v1/users", json={"name": "pat", "team": "product", "role": "member", "password": PASSWORD})
    assert r.status_code == 201, r.text
    c = client(application)
    assert c.post("/console/login", data={"name": "pat", "password": PASSWORD}).status_code == 303
    page = c.get("/console/deployments")
    assert page.status_code == 200, page.text
    assert 'data-deployment="digits"' in page.text and "secret-model" not in page.text


def _svg(page: str, testid: str) -> ET.Element:
    start = page.rindex("<svg", 0, page.index(f'data-testid="{testid}"'))
    return ET.fromstring(page[start: page.index("</svg>", start) + 6])
