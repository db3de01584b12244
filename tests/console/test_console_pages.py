"""The console in process: sign-in (API key, password + TOTP), the session cookie, every page behind
the API's guard and team scoping, submit, audit verify, and errors as HTML."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyotp
import pytest
import yaml
from fastapi.testclient import TestClient

from modelplane.api.app import create_app
from modelplane.api.security import RULES, ApiSecurity, KindAwareRiskScorer, bootstrap_admin
from modelplane.security.risk import RiskConfig
from modelplane.store import Store
from tests.helpers import training_doc

PASSWORD = "correct horse battery"
CLUSTER = {
    "apiVersion": "modelplane/v1", "kind": "Cluster",
    "spec": {
        "nodes": [{"name": "a100-0", "accelerators": {"model": "NVIDIA-A100", "count": 8}, "cpu": "64",
                   "memory": "512Gi"},
                  {"name": "mi-0", "accelerators": {"model": "AMD-MI250", "count": 4}, "cpu": "64",
                   "memory": "512Gi"}],
        "queues": [{"name": "qa", "kind": "training", "team": "a", "quota": {"NVIDIA-A100": 8}},
                   {"name": "qb", "kind": "training", "team": "b", "quota": {"NVIDIA-A100": 8}}],
    },
}
RISK = RiskConfig(no_device_points=0, odd_hour_points=0, new_source_points=0)


def job(name: str, team: str, queue: str) -> dict[str, Any]:
    doc = training_doc(name, queue=queue, replicas=1)
    doc["metadata"]["team"] = team
    return doc


@dataclass
class World:
    sec: ApiSecurity
    app: Any
    admin_key: str = ""
    totp: dict[str, str] = field(default_factory=dict)

    def browser(self) -> TestClient:
        return TestClient(self.app, raise_server_exceptions=False, client=("10.0.0.1", 40000),
                          follow_redirects=False)

    def api(self) -> TestClient:
        c = self.browser()
        c.headers["Authorization"] = f"Bearer {self.admin_key}"
        return c

    def signed_in(self, **form: str) -> TestClient:
        c = self.browser()
        r = c.post("/console/login", data=form)
        assert r.status_code == 303, r.text
        return c

    def as_admin(self) -> TestClient:
        return self.signed_in(api_key=self.admin_key)

    def as_user(self, name: str) -> TestClient:
        return self.signed_in(name=name, password=PASSWORD)


@pytest.fixture
def world(tmp_path) -> Iterator[World]:
    store = Store(f"sqlite:///{tmp_path / 'modelplane.db'}")
    sec = ApiSecurity(store, tmp_path, fast_hashing=True, risk=KindAwareRiskScorer(RISK))
    w = World(sec, create_app(store, security=sec))
    w.admin_key = bootstrap_admin(sec, time.time()) or ""
    admin = w.api()
    assert admin.post("/api/v1/cluster/import", json=CLUSTER).status_code == 200
    for team in ("a", "b"):
        assert admin.post("/api/v1/teams", json={"name": team}).status_code == 201
    for name, team in (("ann", "a"), ("bob", "b")):
        r = admin.post("/api/v1/users", json={"name": name, "team": team, "role": "member", "password": PASSWORD})
        assert r.status_code == 201, r.text
    assert admin.post("/api/v1/jobs", json=job("ja", "a", "qa")).status_code == 201
    assert admin.post("/api/v1/jobs", json=job("jb", "b", "qb")).status_code == 201
    yield w
    sec.close()
    store.close()


def test_api_key_login_sets_a_strict_httponly_session_cookie(world: World) -> None:
    c = world.browser()
    r = c.post("/console/login", data={"api_key": world.admin_key, "next": "/console/jobs"})
    assert r.status_code == 303 and r.headers["location"] == "/console/jobs"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert world.admin_key not in r.headers["set-cookie"]  # an opaque id, not the credential
    page = c.get("/console")
    assert page.status_code == 200 and "admin" in page.text
    assert "NVIDIA-A100" in page.text and "AMD-MI250" in page.text and 'class="bar"' in page.text


def test_pages_without_a_session_send_the_browser_to_the_login_page(world: World) -> None:
    c = world.browser()
    for path in ("/console", "/console/jobs", "/console/jobs/ja", "/console/audit"):
        r = c.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next="), path
    r = c.get("/console/jobs/ja/logs", headers={"HX-Request": "true"})
    assert r.status_code == 401 and r.headers["hx-redirect"].startswith("/console/login")
    assert c.get("/console/login").status_code == 200
    assert c.get("/console/static/htmx.min.js").status_code == 200


def test_a_wrong_key_is_refused_and_audited(world: World) -> None:
    r = world.browser().post("/console/login", data={"api_key": "mpk_wrong"})
    assert r.status_code == 401 and "invalid" in r.text.lower() and "set-cookie" not in r.headers
    entries = world.api().get("/api/v1/audit/entries", params={"limit": 1000}).json()["items"]
    assert any(e["entry"]["outcome"] == "denied" and e["entry"]["operation"] == "POST /console/login"
               for e in entries if e["entry"])


def test_password_and_totp_login(world: World) -> None:
    ann = world.as_user("ann")
    token = world.browser().post("/api/v1/auth/login", json={"name": "ann", "password": PASSWORD}).json()
    c = world.browser()
    c.headers["Authorization"] = f"Bearer {token['access_token']}"
    totp, now = pyotp.TOTP(c.post("/api/v1/auth/mfa/enroll").json()["secret"]), time.time()
    assert c.post("/api/v1/auth/mfa/confirm", json={"code": totp.at(now - 30)}).status_code == 200
    r = world.browser().post("/console/login", data={"name": "ann", "password": PASSWORD})
    assert r.status_code == 401 and "totp" in r.text.lower()
    r = world.browser().post("/console/login", data={"name": "ann", "password": "nope", "totp_code": "123456"})
    assert r.status_code == 401
    ok = world.signed_in(name="ann", password=PASSWORD, totp_code=totp.at(now))
    assert "ann" in ok.get("/console/jobs").text
    assert ann.get("/console/jobs").status_code == 200  # the earlier session still works


def test_a_users_session_refreshes_its_access_token_before_it_expires(world: World) -> None:
    ann = world.as_user("ann")
    (session,) = world.app.state.console_sessions._sessions.values()
    old = session.credential
    session.expires_at = time.time() - 1  # as if the access token had run out
    assert ann.get("/console/jobs").status_code == 200
    assert session.credential != old and session.expires_at > time.time()
    session.expires_at, session.refresh_token = time.time() - 1, "spent-or-forged"
    assert ann.get("/console/jobs").status_code == 303  # the login is over: back to the sign-in page
    assert not world.app.state.console_sessions._sessions


def test_members_see_only_their_teams_jobs_and_queues(world: World) -> None:
    bob = world.as_user("bob")
    jobs = bob.get("/console/jobs").text
    assert ">jb<" in jobs and ">ja<" not in jobs
    queues = bob.get("/console/queues").text
    assert 'data-queue="qb"' in queues and 'data-queue="qa"' not in queues
    r = bob.get("/console/jobs/ja")
    assert r.status_code == 403 and "<strong>" in r.text and "application/json" not in r.headers["content-type"]
    assert bob.get("/console/audit").status_code == 403  # members do not read the audit log
    admin = world.as_admin()
    assert ">ja<" in admin.get("/console/jobs").text and ">jb<" in admin.get("/console/jobs").text


def test_job_page_shows_state_placement_events_and_why_pending(world: World) -> None:
    page = world.as_admin().get("/console/jobs/ja")
    assert page.status_code == 200
    assert 'data-testid="job-state">Pending' in page.text and "Why pending" in page.text
    assert "Events" in page.text and 'hx-get="/console/jobs/ja/logs"' in page.text
    frag = world.as_admin().get("/console/jobs/ja/status", headers={"HX-Request": "true"})
    assert frag.status_code == 200 and "<html" not in frag.text and 'hx-trigger="every 2s"' in frag.text


def test_submit_pasted_yaml_through_the_apis_apply(world: World) -> None:
    ann = world.as_user("ann")
    manifest = yaml.safe_dump(job("from-console", "a", "qa"))
    r = ann.post("/console/jobs", json={"manifest": manifest}, headers={"HX-Request": "true"})
    assert r.status_code == 201, r.text
    assert r.headers["hx-redirect"] == "/console/jobs/from-console"
    assert world.api().get("/api/v1/jobs/from-console").json()["team"] == "a"
    again = ann.post("/console/jobs", json={"manifest": manifest}, headers={"HX-Request": "true"})
    assert again.status_code == 200 and "unchanged" in again.text
    bad = ann.post("/console/jobs", json={"manifest": "kind: [unclosed"}, headers={"HX-Request": "true"})
    assert bad.status_code == 422 and "not valid YAML" in bad.text and "<html" not in bad.text
    other = ann.post("/console/jobs", json={"manifest": yaml.safe_dump(job("x", "b", "qb"))},
                     headers={"HX-Request": "true"})
    assert other.status_code == 403
    entries = world.api().get("/api/v1/audit/entries", params={"limit": 1000}).json()["items"]
    ops = [(e["entry"]["operation"], e["entry"]["outcome"]) for e in entries if e["entry"]]
    assert ("POST /console/jobs", "succeeded") in ops and ("POST /console/jobs", "denied") in ops


def test_audit_page_and_verify_button(world: World) -> None:
    admin = world.as_admin()
    page = admin.get("/console/audit")
    assert page.status_code == 200 and "bootstrap.admin" in page.text and 'hx-post="/console/audit/verify"' in page.text
    r = admin.post("/console/audit/verify", headers={"HX-Request": "true"})
    assert r.status_code == 200 and "Verified:" in r.text


def test_cross_site_posts_and_logout(world: World) -> None:
    admin = world.as_admin()
    evil = admin.post("/console/audit/verify", headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    forged = world.browser().post("/console/login", data={"api_key": world.admin_key},
                                  headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403 and "set-cookie" not in forged.headers
    r = admin.post("/console/logout")
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert admin.get("/console/jobs").status_code == 303  # the session is gone server-side too


def test_every_console_route_is_guarded_by_a_rule(world: World) -> None:
    from fastapi.routing import APIRoute

    from modelplane.api.console.routes import pages, public

    def ops(router: Any) -> set[tuple[str, str]]:
        return {(m, r.path) for r in router.routes if isinstance(r, APIRoute) for m in r.methods}

    assert ops(public) == {("GET", "/console/login"), ("POST", "/console/login"), ("POST", "/console/logout")}
    guarded = ops(pages)
    assert len(guarded) >= 9 and guarded <= set(RULES), sorted(guarded - set(RULES))
    assert {k for k in RULES if k[1].startswith("/console")} == guarded
    assert all(RULES[k].action in ("read", "write") for k in guarded)
    anonymous = world.browser()
    for method, path in sorted(guarded):
        r = anonymous.request(method, path.replace("{name}", "ja"), json={})
        assert r.status_code in (303, 401), (method, path, r.status_code)
