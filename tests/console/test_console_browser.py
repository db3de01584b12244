"""The console in a real browser (Debian's Chromium driven by Playwright) against `modelplane up`:
sign in with the admin key, submit a job, watch it succeed, read its logs, verify the audit log.
Screenshots are written under the test's tmp_path and their paths printed."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Server, make_server

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
JOB = """apiVersion: modelplane/v1
kind: TrainingJob
metadata: {name: browser-demo, team: research}
spec:
  queue: training
  replicas: 2
  template:
    command: [python, -c, "import os; print('hello from rank', os.environ.get('RANK'))"]
    resources: {cpu: "1", memory: 1Gi, accelerators: 1, acceleratorModel: NVIDIA-A100}
"""

SLEEPER = {"apiVersion": "modelplane/v1", "kind": "TrainingJob", "metadata": {"name": "sleeper", "team": "research"},
           "spec": {"queue": "training", "replicas": 1,
                    "template": {"command": ["python", "-c", "import time; time.sleep(120)"],
                                 "resources": {"cpu": "1", "memory": "1Gi", "accelerators": 4,
                                               "acceleratorModel": "NVIDIA-A100"}}}}

LINEAGE = [({"eventType": "COMPLETE", "eventTime": "2026-01-01T00:00:00Z", "producer": "tests", "run": {"runId": run},
             "job": {"namespace": "modelplane", "name": job}, "inputs": [{"namespace": ns, "name": i} for ns, i in ins],
             "outputs": [{"namespace": ns, "name": o} for ns, o in outs]}, kind)
           for run, job, ins, outs, kind in [
               ("r1", "prep", [("s3://raw", "a")], [("s3://ds", "clean")], "pipeline"),
               ("r2", "train", [("s3://ds", "clean")], [("models", "llm:1")], "training"),
               ("r3", "chat", [("models", "llm:1")], [], "deployment")]]


def _browser_tools() -> Any:
    """Playwright's sync API and Debian's Chromium, or a failure saying how to install them."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's browser with 'sudo apt-get install -y chromium' "
                    "(scripts/install-system-deps.sh does it)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: '.venv/bin/pip install playwright' (the dev extra); "
                    "no 'playwright install' is needed, the test drives /usr/bin/chromium", pytrace=False)
    return sync_playwright


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = make_server(tmp_path)
    data = tmp_path / "ssd" / "teams" / "research" / "features"  # storage for the cost page to price
    data.mkdir(parents=True)
    (data / "part-0").write_bytes(b"f" * 1_000_000)
    s.env["MODELPLANE_STORAGE_SOURCES"] = json.dumps([f"hot={tmp_path / 'ssd'}"])
    s.start()
    yield s
    s.stop()


def test_sign_in_submit_watch_and_read_logs_in_chromium(server: Server, tmp_path: Path) -> None:
    sync_playwright = _browser_tools()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    taken: list[Path] = []

    def shot(page: Any, name: str) -> None:
        path = shots / f"{len(taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        taken.append(path)

    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        except Exception as exc:  # a browser that cannot start is a broken install, not a pass
            pytest.fail(f"Chromium did not start under Playwright ({exc}); reinstall it with "
                        "'sudo apt-get install --reinstall -y chromium'", pytrace=False)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        try:
            drive(server, page, shot)
        except Exception as exc:  # keep what the browser showed: a screenshot and the page's text
            shot(page, "failure")
            raise AssertionError(f"{exc}\nat {page.url}; screenshots in {shots}\n"
                                 f"{page.inner_text('body')[:3000]}") from exc
        finally:
            print("console screenshots:\n" + "\n".join(str(p) for p in taken))
            browser.close()
    assert all(p.stat().st_size > 1000 for p in taken)


def drive(server: Server, page: Any, shot: Any) -> None:
    """Sign in, look at the pool, submit (a bad then a good manifest), watch, read logs, verify the audit log."""
    page.goto(server.url + "/console/jobs")
    assert "/console/login" in page.url
    shot(page, "login")
    page.fill("input[name=api_key]", server.token)
    page.click("#login-key")
    page.wait_for_url("**/console/jobs")
    assert "admin" in page.inner_text("[data-testid=whoami]")
    cookie = next(c for c in page.context.cookies() if c["name"] == "modelplane_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    with server.client() as api:  # something running, so the pool shows allocated devices
        assert api.post("/jobs", json=SLEEPER).status_code == 201
        deadline = time.time() + 60
        while api.get("/jobs/sleeper").json()["state"] != "Running":
            assert time.time() < deadline, "the sleeper job did not start"
            time.sleep(0.2)
    page.goto(server.url + "/console")
    a100 = page.locator("tr[data-model='NVIDIA-A100'] td.num").all_inner_texts()
    assert a100[:2] == ["4", "12"], a100  # allocated, idle
    page.wait_for_selector("svg[data-testid=utilization-all] polyline[data-series=allocated]", state="attached")
    shot(page, "pool")

    page.click("text=Submit")
    page.fill("#manifest", "kind: [unclosed")
    page.click("#submit-job")
    page.wait_for_selector("#result .error")
    assert "not valid YAML" in page.inner_text("#result")
    shot(page, "submit-error")
    page.fill("#manifest", JOB)
    page.click("#submit-job")
    page.wait_for_url("**/console/jobs/browser-demo")
    page.wait_for_function(
        "document.querySelector('[data-testid=job-state]').textContent.trim() === 'Succeeded'",
        timeout=120_000)
    page.wait_for_function(  # the logs pane polls on its own until the job has finished
        "document.querySelectorAll('#logs pre.log').length === 2 && "
        "!document.querySelector('#logs').hasAttribute('hx-trigger')", timeout=30_000)
    logs = page.inner_text("#logs")
    assert "hello from rank 0" in logs and "hello from rank 1" in logs, logs
    assert "a100" in page.inner_text("#job-status")  # the placement table names the node
    shot(page, "job-succeeded-with-logs")

    page.goto(server.url + "/console/queues")
    assert page.locator("section[data-queue='training']").count() == 1
    shot(page, "queues")
    page.goto(server.url + "/console/jobs")
    assert "browser-demo" in page.inner_text("main")
    shot(page, "jobs")
    page.goto(server.url + "/console/audit")
    page.click("#verify-button")
    page.wait_for_selector("[data-testid=verify-result]")
    assert page.inner_text("[data-testid=verify-result]").startswith("Verified:")
    assert "POST /console/jobs" in page.inner_text("main")
    shot(page, "audit-verified")

    page.click("header nav >> text=Cost")  # the sleeper has run: research has GPU-hours and an SSD dataset
    page.wait_for_selector("svg[data-testid=cost-by-team] g[data-label=research]")
    assert "teams/research/features" in page.inner_text("[data-testid=storage-datasets]")
    page.select_option("#since", "1h")  # the window selector reloads the page
    page.wait_for_url("**/console/cost?since=1h")
    assert page.locator("tr[data-tier=hot]").count() == 1
    shot(page, "cost")
    with server.client() as api:
        api.delete("/jobs/sleeper")
        for body, kind in LINEAGE:
            assert api.post("/lineage/events", json=body, params={"job_kind": kind}).status_code == 201

    page.click("header nav >> text=Lineage")
    page.fill("[data-testid=lineage-q]", "llm")
    page.click("form.lineage-search button")
    page.click("[data-node='model/llm:1']")
    page.wait_for_selector("[data-testid=lineage-node]")
    upstream = page.inner_text(".lineage-tree[data-direction=upstream]")
    assert "train" in upstream and "clean" in upstream and "prep" in upstream, upstream
    assert "chat" in page.inner_text(".lineage-tree[data-direction=downstream]")
    shot(page, "lineage")
