"""Every panel of every Grafana dashboard queries metrics that a live platform really exposes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import REPO, Server, make_server
from tests.obs.promql import metric_names

pytestmark = pytest.mark.integration
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
EXPECTED = {"cluster-overview", "queues-fairness", "training-runs", "inference", "data", "security"}
SMALL_JOB = {
    "apiVersion": "modelplane/v1", "kind": "TrainingJob",
    "metadata": {"name": "obs-small", "team": "research"},
    "spec": {"queue": "training", "replicas": 1,
             "template": {"command": ["python", "-c", "print('hello from obs')"],
                          "resources": {"cpu": "1", "memory": "1Gi", "accelerators": 1,
                                        "acceleratorModel": "NVIDIA-A100"}}},
}


def panel_exprs() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                out.append((path.stem, panel["title"], target["expr"]))
    return out


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, set[str]]]:
    server = make_server(tmp_path_factory.mktemp("obs")).start()
    try:
        with server.client() as c:
            assert c.post("/jobs", json=SMALL_JOB).status_code == 201
            deadline = time.time() + 90
            while c.get("/jobs/obs-small").json()["state"] not in ("Succeeded", "Failed"):
                assert time.time() < deadline, "the small job did not finish"
                time.sleep(0.3)
            c.get("/jobs/ghost-without-access", headers={"Authorization": "Bearer wrong"})  # a 401 series
        r = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {server.token}"}, timeout=30)
        assert r.status_code == 200, r.text
        samples = {s.name for fam in text_string_to_metric_families(r.text) for s in fam.samples}
        yield server, samples
    finally:
        server.stop()


def test_the_six_dashboards_and_their_provisioning_exist() -> None:
    assert {p.stem for p in DASHBOARDS.glob("*.json")} == EXPECTED
    prov = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/modelplane.yaml").read_text())
    assert prov["apiVersion"] == 1 and prov["providers"][0]["type"] == "file"
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS.glob("*.json")]
    assert len(set(uids)) == len(uids)
    scrape = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics" and "credentials_file" in scrape["authorization"]


def test_dashboard_files_are_what_the_generator_writes() -> None:
    import runpy

    gen = runpy.run_path(str(REPO / "deploy" / "grafana" / "generate_dashboards.py"))
    for uid, (title, panels) in gen["DASHBOARDS"].items():
        on_disk = json.loads((DASHBOARDS / f"{uid}.json").read_text())
        assert on_disk == gen["dashboard"](uid, title, panels), f"regenerate {uid}.json with generate_dashboards.py"


def test_every_panel_metric_exists_in_a_live_scrape(scraped: tuple[Server, set[str]]) -> None:
    _, samples = scraped
    exprs = panel_exprs()
    assert len(exprs) >= 30
    missing = [f"{board} / {title}: {name}" for board, title, expr in exprs
               for name in sorted(metric_names(expr)) if name not in samples]
    assert not missing, "metrics used by dashboards but absent from /metrics:\n" + "\n".join(missing)


def test_the_scrape_reflects_the_work_done(scraped: tuple[Server, set[str]]) -> None:
    server, _ = scraped
    text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {server.token}"}).text
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert values[("modelplane_placements_total", (("queue", "training"),))] >= 1
    assert values[("modelplane_accelerators", (("model", "NVIDIA-A100"), ("status", "idle")))] == 16
    assert values[("modelplane_audit_log_entries", ())] >= 2  # bootstrap + the job's submission
    assert values[("modelplane_policy_version", ())] >= 1
    assert values[("modelplane_workloads", (("kind", "TrainingJob"), ("state", "Running")))] == 0


def test_metrics_need_a_token(scraped: tuple[Server, set[str]]) -> None:
    server, _ = scraped
    assert httpx.get(server.url + "/metrics").status_code == 401
