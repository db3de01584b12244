"""The API behind the security library, in process, on SQLite and PostgreSQL: who may call what,
login with TOTP, risk-based step-up, revocation, and the audit log end to end (tamper -> named)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from modelplane.api.app import create_app
from modelplane.api.security import RULES, ApiSecurity, KindAwareRiskScorer, bootstrap_admin
from modelplane.security.risk import RiskConfig
from tests.helpers import training_doc

PASSWORD = "correct horse battery"
CLUSTER = {
    "apiVersion": "modelplane/v1",
    "kind": "Cluster",
    "spec": {
        "nodes": [{"name": "a100-0", "accelerators": {"model": "NVIDIA-A100", "count": 8}, "cpu": "64",
                   "memory": "512Gi"}],
        "queues": [
            {"name": "qa", "kind": "training", "team": "a", "quota": {"NVIDIA-A100": 8}},
            {"name": "qb", "kind": "training", "team": "b", "quota": {"NVIDIA-A100": 8}},
        ],
    },
}
# Users: a new network is worth 60 points (step-up at 40) once the baseline has 20 requests.
RISK = RiskConfig(step_up_threshold=40, deny_threshold=90, new_source_points=60, no_device_points=0,
                  odd_hour_points=0)


def job(name: str, team: str, queue: str) -> dict[str, Any]:
    doc = training_doc(name, queue=queue, replicas=1)
    doc["metadata"]["team"] = team
    return doc


@dataclass
class World:
    sec: ApiSecurity
    app: Any
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, who: str | None = None, ip: str = "10.0.0.1") -> TestClient:
        c = TestClient(self.app, raise_server_exceptions=False, client=(ip, 40000))
        if who is not None:
            c.headers["Authorization"] = f"Bearer {self.tokens[who]}"
        return c


def login(w: World, name: str, code: str | None = None, ip: str = "10.0.0.1") -> dict[str, Any]:
    body = {"name": name, "password": PASSWORD} | ({"totp_code": code} if code else {})
    r = w.client(ip=ip).post("/api/v1/auth/login", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def world(store, tmp_path) -> Iterator[World]:
    sec = ApiSecurity(store, tmp_path, fast_hashing=True, risk=KindAwareRiskScorer(RISK))
    w = World(sec, create_app(store, security=sec))
    w.tokens["admin"] = bootstrap_admin(sec, time.time()) or ""
    admin = w.client("admin")
    assert admin.post("/api/v1/cluster/import", json=CLUSTER).status_code == 200
    for team in ("a", "b", "compliance"):
        assert admin.post("/api/v1/teams", json={"name": team}).status_code == 201
    for name, team, role in (("ann", "a", "member"), ("bob", "b", "member"), ("aud", "compliance", "auditor")):
        r = admin.post("/api/v1/users", json={"name": name, "team": team, "role": role, "password": PASSWORD})
        assert r.status_code == 201, r.text
        w.tokens[name] = login(w, name)["access_token"]
    assert admin.post("/api/v1/service-accounts", json={"name": "ci", "team": "a"}).status_code == 201
    r = admin.post("/api/v1/service-accounts/ci/api-keys", json={"scopes": ["jobs:read", "jobs:write"]})
    assert r.status_code == 201 and r.json()["key"].startswith("mpk_")
    w.tokens["ci"] = r.json()["key"]
    assert w.client("ann").post("/api/v1/jobs", json=job("ja", "a", "qa")).status_code == 201
    assert w.client("bob").post("/api/v1/jobs", json=job("jb", "b", "qb")).status_code == 201
    yield w
    sec.close()


ROLES = ("admin", "ann", "bob", "aud", "ci", None)  # ann: team a (owns ja); bob: team b; None: anonymous
# (method, path, body, the roles allowed). Every other authenticated role must get 403, anonymous 401.
MATRIX: list[tuple[str, str, Any, set[str]]] = [
    ("GET", "/api/v1/jobs/ja", None, {"admin", "ann", "ci"}),
    ("GET", "/api/v1/jobs/ja/events", None, {"admin", "ann", "ci"}),
    ("GET", "/api/v1/jobs/ja/logs", None, {"admin", "ann", "ci"}),
    ("DELETE", "/api/v1/jobs/ja", None, {"admin", "ann", "ci"}),
    ("POST", "/api/v1/jobs", job("ja2", "a", "qa"), {"admin", "ann", "ci"}),
    ("GET", "/api/v1/jobs", None, {"admin", "ann", "bob", "ci"}),  # each sees their own team's
    ("GET", "/api/v1/jobs?team=a", None, {"admin", "ann", "ci"}),
    ("GET", "/api/v1/nodes", None, {"admin", "ann", "bob"}),
    ("GET", "/api/v1/nodes/a100-0", None, {"admin", "ann", "bob"}),
    ("POST", "/api/v1/nodes/a100-0/cordon", None, {"admin"}),
    ("POST", "/api/v1/nodes/a100-0/drain", None, {"admin"}),
    ("POST", "/api/v1/cluster/import", CLUSTER, {"admin"}),
    ("POST", "/api/v1/queues", CLUSTER["spec"]["queues"][0], {"admin"}),
    ("DELETE", "/api/v1/queues/nope", None, {"admin"}),
    ("GET", "/api/v1/queues/qa", None, {"admin", "ann"}),
    ("GET", "/api/v1/queues", None, {"admin", "ann", "bob"}),
    ("GET", "/api/v1/audit/entries", None, {"admin", "aud"}),
    ("GET", "/api/v1/audit/checkpoint", None, {"admin", "aud"}),
    ("GET", "/api/v1/audit/proof/inclusion?index=0", None, {"admin", "aud"}),
    ("GET", "/api/v1/audit/proof/consistency?old=1&new=2", None, {"admin", "aud"}),
    ("POST", "/api/v1/audit/verify", None, {"admin", "aud"}),
    ("GET", "/api/v1/policies", None, {"admin"}),
    ("POST", "/api/v1/users", {"name": "eve", "team": "a", "role": "admin", "password": PASSWORD}, {"admin"}),
    ("POST", "/api/v1/teams", {"name": "c"}, {"admin"}),
    ("POST", "/api/v1/service-accounts/ci/api-keys", {"scopes": ["jobs:read"]}, {"admin"}),
    ("GET", "/api/v1/auth/whoami", None, {"admin", "ann", "bob", "aud"}),
    ("GET", "/metrics", None, {"admin", "ann", "bob"}),
    ("GET", "/api/v1/version", None, {"admin", "ann", "bob"}),
]


def test_route_by_role_matrix(world: World) -> None:
    wrong = []
    for method, path, body, allowed in MATRIX:
        for role in ROLES:
            r = world.client(role).request(method, path, json=body)
            want = "allow" if role in allowed else ("401" if role is None else "403")
            got = "401" if r.status_code == 401 else "403" if r.status_code == 403 else "allow"
            if want != got or r.status_code >= 500:
                wrong.append(f"{method} {path} as {role}: {r.status_code} {r.text[:120]}")
            if got in ("401", "403"):
                assert r.json()["message"] and r.json()["hint"], r.text
    assert not wrong, "\n".join(wrong)


def test_every_route_has_an_authorization_rule(world: World) -> None:
    paths = world.client().get("/openapi.json").json()["paths"]
    ops = {(m.upper(), p) for p, item in paths.items() for m in item if p.startswith(("/api/", "/metrics"))}
    assert ops <= set(RULES), sorted(ops - set(RULES))
    public = {k for k, v in RULES.items() if v.action == "public"}
    # Public to the identity layer only: key release authenticates the calling job's own credential.
    assert {p for _, p in public} == {f"/api/v1/auth/{x}" for x in
                                      ("login", "refresh", "logout", "step-up", "devices/challenge")} | {
        "/api/v1/datasets/key-release"}


def test_lists_never_show_another_teams_jobs_or_queues(world: World) -> None:
    bob = world.client("bob")
    assert [j["name"] for j in bob.get("/api/v1/jobs").json()["items"]] == ["jb"]
    assert [q["name"] for q in bob.get("/api/v1/queues").json()["items"]] == ["qb"]
    assert bob.get("/api/v1/jobs", params={"team": "a"}).status_code == 403
    names = {j["name"] for j in world.client("admin").get("/api/v1/jobs").json()["items"]}
    assert names == {"ja", "jb"}


def test_missing_job_is_403_for_members_404_for_admins(world: World) -> None:
    """Members get 403 for a name that is free, as for another team's job: no existence oracle."""
    r = world.client("bob").get("/api/v1/jobs/ghost")
    assert r.status_code == 403 and r.json()["hint"]
    assert world.client("bob").get("/api/v1/jobs/ja").status_code == 403
    assert world.client("admin").get("/api/v1/jobs/ghost").status_code == 404
    assert world.client("bob").delete("/api/v1/jobs/ja").status_code == 403
    assert world.client("admin").get("/api/v1/jobs/ja").json()["cancelRequested"] is False


def fresh_totp_step() -> None:
    """Wait until at least 10 s remain in the current 30 s TOTP step (codes below span 3 steps)."""
    while 30 - time.time() % 30 < 10:
        time.sleep(0.5)


def test_totp_login_step_up_on_risk_and_revocation(world: World) -> None:
    ann = world.client("ann")
    secret = ann.post("/api/v1/auth/mfa/enroll").json()["secret"]
    totp = pyotp.TOTP(secret)
    fresh_totp_step()
    now = time.time()
    assert ann.post("/api/v1/auth/mfa/confirm", json={"code": totp.at(now - 30)}).status_code == 200
    # From now on a password alone is not enough, and the answer does not say which part failed.
    r = world.client().post("/api/v1/auth/login", json={"name": "ann", "password": PASSWORD})
    assert r.status_code == 401 and r.json()["message"] == "invalid or expired credentials"
    r = world.client().post("/api/v1/auth/login", json={"name": "nobody", "password": PASSWORD})
    assert r.status_code == 401 and r.json()["message"] == "invalid or expired credentials"

    # Baseline: 20 ordinary requests from 10.0.0.0/24; then the same token from a new network.
    for _ in range(20):
        assert ann.get("/api/v1/jobs/ja").status_code == 200
    roaming = world.client("ann", ip="192.168.7.7")
    r = roaming.get("/api/v1/jobs/ja")
    assert r.status_code == 403 and "second factor" in r.json()["message"] and "step-up" in r.json()["hint"]
    r = roaming.post("/api/v1/auth/step-up", json={"code": totp.at(now)})
    assert r.status_code == 200, r.text
    stepped = r.json()
    assert stepped["principal"]["mfa"] is True
    roaming.headers["Authorization"] = f"Bearer {stepped['access_token']}"
    assert roaming.get("/api/v1/jobs/ja").status_code == 200
    # Step-up spent the old access token.
    assert ann.get("/api/v1/jobs/ja").status_code == 401

    tokens = login(world, "ann", totp.at(now + 30))
    assert tokens["principal"]["mfa"] is True
    c = world.client()
    c.headers["Authorization"] = f"Bearer {tokens['access_token']}"
    # Refresh rotates; replaying the spent refresh token revokes the whole login.
    r1 = c.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r1.status_code == 200
    assert c.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    assert c.post("/api/v1/auth/refresh", json={"refresh_token": r1.json()["refresh_token"]}).status_code == 401
    # Logout revokes the access token at once.
    assert c.get("/api/v1/jobs/ja").status_code == 200
    assert c.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}).status_code == 200
    assert c.get("/api/v1/jobs/ja").status_code == 401


def test_wrongly_signed_and_expired_tokens_are_401(world: World) -> None:
    from modelplane.security.identity.tokens import TokenKey, issue_access_token
    from modelplane.security.principal import Principal

    forged, _, _ = issue_access_token(TokenKey.generate(), Principal("ann", "user", "a", "admin"), time.time())
    expired, _, _ = issue_access_token(world.sec.keys.token_key, Principal("ann", "user", "a", "member"),
                                       time.time() - 3600)
    for token in (forged, expired, world.tokens["ann"] + "x", "mpk_0_nope"):
        r = world.client().get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and r.json()["message"] == "invalid or expired credentials"


def test_policy_update_is_versioned_validated_and_in_force_at_once(world: World) -> None:
    admin = world.client("admin")
    cur = admin.get("/api/v1/policies").json()
    assert cur["version"] == 1 and "members-read-the-node-pool" in cur["text"]
    r = admin.put("/api/v1/policies", json={"text": cur["text"] + "\npermit (principal, action, resource) when "
                                            "{ resource.owner_tem == \"a\" };", "expected_version": 1})
    assert r.status_code == 422 and "validation" in r.json()["message"]
    frozen = cur["text"] + '\n@id("freeze-nodes-for-members")\nforbid (principal, action, resource is Node)' \
                           ' when { principal.role == "member" };\n'
    assert world.client("ann").get("/api/v1/nodes").status_code == 200
    r = admin.put("/api/v1/policies", json={"text": frozen, "expected_version": 1})
    assert r.status_code == 200 and r.json()["version"] == 2
    assert world.client("ann").get("/api/v1/nodes").status_code == 403
    assert admin.put("/api/v1/policies", json={"text": frozen, "expected_version": 1}).status_code == 409
    assert world.client("ann").put("/api/v1/policies", json={"text": frozen, "expected_version": 2}).status_code == 403


def test_audit_records_writes_and_denials_and_detects_tampering(world: World) -> None:
    admin, aud = world.client("admin"), world.client("aud")
    r = world.client("ann").post("/api/v1/jobs", json=job("audited", "a", "qa"), headers={"X-Request-Id": "req-1"})
    assert r.status_code == 201 and r.headers["X-Request-Id"] == "req-1"
    assert world.client("bob").delete("/api/v1/jobs/audited", headers={"X-Request-Id": "req-2"}).status_code == 403
    assert admin.post("/api/v1/nodes/a100-0/cordon").status_code == 200
    entries = []
    offset: int | None = 0
    while offset is not None:
        page = aud.get("/api/v1/audit/entries", params={"offset": offset, "limit": 7}).json()
        entries += page["items"]
        offset = page["next"]
    assert [e["index"] for e in entries] == list(range(len(entries)))
    by_req = {}
    for e in entries:
        by_req.setdefault(e["entry"]["request_id"], []).append(e["entry"])
    assert [(x["operator"], x["outcome"]) for x in by_req["req-1"]] == [("ann", "allowed"), ("ann", "succeeded")]
    assert by_req["req-1"][0]["resource"] == "Job/audited" and by_req["req-1"][0]["operation"] == "POST /api/v1/jobs"
    assert [(x["operator"], x["outcome"]) for x in by_req["req-2"]] == [("bob", "denied")]
    ops = [e["entry"]["operation"] for e in entries]
    assert "auth.login" in ops and "POST /api/v1/users" in ops and "POST /api/v1/nodes/{name}/cordon" in ops
    assert any(e["entry"]["operator"] == "anonymous" or e["entry"]["outcome"] != "denied" for e in entries)

    world.sec.checkpoint_now()
    cp = aud.get("/api/v1/audit/checkpoint").json()
    assert cp["size"] >= len(entries) and cp["note"].startswith("modelplane.local/audit\n")
    ok = aud.post("/api/v1/audit/verify").json()
    assert ok["ok"] and ok["checkpoints_checked"] >= 1, ok

    victim = next(e["index"] for e in entries if e["entry"]["request_id"] == "req-2")
    with world.sec.audit_engine.begin() as conn:
        conn.execute(text("UPDATE security_audit_entries SET body = replace(body, '\"denied\"', '\"allowed\"') "
                          "WHERE idx = :i"), {"i": victim})
    bad = aud.post("/api/v1/audit/verify").json()
    assert not bad["ok"] and bad["first_bad_index"] == victim and "modified" in bad["problem"]


def test_inclusion_and_consistency_proofs_verify_against_the_signed_checkpoint(world: World) -> None:
    import base64

    from modelplane.security.audit.merkle import verify_consistency, verify_inclusion
    from modelplane.security.audit.note import NoteVerifier, open_checkpoint

    aud = world.client("aud")
    first = aud.get("/api/v1/audit/checkpoint").json()
    world.client("admin").post("/api/v1/nodes/a100-0/cordon")
    second = aud.get("/api/v1/audit/checkpoint").json()
    verifier = NoteVerifier.from_vkey((world.sec.home / "keys" / "audit.vkey").read_text().strip())
    cp1 = open_checkpoint(first["note"], [verifier], "modelplane.local/audit")
    cp2 = open_checkpoint(second["note"], [verifier], "modelplane.local/audit")
    assert cp2.size > cp1.size
    for index in (0, cp2.size // 2, cp2.size - 1):
        p = aud.get("/api/v1/audit/proof/inclusion", params={"index": index, "size": cp2.size}).json()
        verify_inclusion(index, cp2.size, base64.b64decode(p["leaf_hash"]),
                         [base64.b64decode(h) for h in p["proof"]], cp2.root_hash)
    c = aud.get("/api/v1/audit/proof/consistency", params={"old": cp1.size, "new": cp2.size}).json()
    verify_consistency(cp1.size, cp2.size, [base64.b64decode(h) for h in c["proof"]], cp1.root_hash, cp2.root_hash)
    r = aud.get("/api/v1/audit/proof/inclusion", params={"index": cp2.size + 5})
    assert r.status_code == 400 and r.json()["hint"]


def test_member_submits_only_for_their_team(world: World) -> None:
    ann = world.client("ann")
    r = ann.post("/api/v1/jobs", json=job("sneaky", "b", "qb"))
    assert r.status_code == 403
    r = ann.post("/api/v1/jobs", json=training_doc("noteam", queue="qa", replicas=1))  # team "default"
    assert r.status_code == 403
    assert world.client("admin").get("/api/v1/jobs/sneaky").status_code == 404


def test_registered_device_proves_possession_at_login(world: World) -> None:
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from modelplane.security.identity.devices import challenge_message

    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ann = world.client("ann")
    r = ann.post("/api/v1/auth/devices", json={"public_key": base64.b64encode(raw).decode()})
    assert r.status_code == 201, r.text
    fp = r.json()["fingerprint"]
    assert fp.startswith("sha256:")
    assert world.client("bob").post("/api/v1/auth/devices/verify", json={
        "fingerprint": fp, "nonce": "x", "signature": base64.b64encode(b"0" * 64).decode()}).json() == {"valid": False}

    def proof() -> dict[str, str]:
        nonce = world.client().post("/api/v1/auth/devices/challenge", json={"fingerprint": fp}).json()["nonce"]
        sig = key.sign(challenge_message(nonce, fp))
        return {"fingerprint": fp, "nonce": nonce, "signature": base64.b64encode(sig).decode()}

    body = {"name": "ann", "password": PASSWORD, "device": proof()}
    r = world.client().post("/api/v1/auth/login", json=body)
    assert r.status_code == 200 and r.json()["principal"]["device"] == fp
    # The challenge is spent: replaying the same proof fails, with the uniform message.
    r = world.client().post("/api/v1/auth/login", json=body)
    assert r.status_code == 401 and r.json()["message"] == "invalid or expired credentials"
    # bob cannot log in with ann's device.
    r = world.client().post("/api/v1/auth/login", json={"name": "bob", "password": PASSWORD, "device": proof()})
    assert r.status_code == 401


def test_operators_are_pseudonymous_and_erasure_keeps_the_log_verifiable(world: World) -> None:
    admin, aud = world.client("admin"), world.client("aud")
    assert world.client("ann").post("/api/v1/jobs", json=job("erasable", "a", "qa"),
                                    headers={"X-Request-Id": "req-erase"}).status_code == 201
    with world.sec.audit_engine.connect() as conn:
        bodies = [r[0] for r in conn.execute(text("SELECT body FROM security_audit_entries")) if r[0]]
    assert bodies and not any('"operator": "ann"' in b or '"operator":"ann"' in b for b in bodies)

    def ann_entries() -> list[dict]:
        items = aud.get("/api/v1/audit/entries", params={"limit": 1000}).json()["items"]
        return [e["entry"] for e in items if e["entry"] and e["entry"]["request_id"] == "req-erase"]

    assert {e["operator"] for e in ann_entries()} == {"ann"}
    assert world.client("ann").post("/api/v1/audit/erase", json={"subject": "ann"}).status_code == 403
    r = admin.post("/api/v1/audit/erase", json={"subject": "ann"})
    assert r.status_code == 200 and r.json()["erased"] is True
    assert {e["operator"] for e in ann_entries()} == {None}
    world.sec.checkpoint_now()
    assert aud.post("/api/v1/audit/verify").json()["ok"]
