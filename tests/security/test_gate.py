"""The whole chain with real components: token -> risk -> Cedar -> audit log."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from modelplane.core.errors import Forbidden
from modelplane.security.audit import AuditLog, NoteSigner, verify_log
from modelplane.security.authz import Authorizer
from modelplane.security.errors import AuthenticationFailed, MfaRequired
from modelplane.security.gate import Request, SecurityGate
from modelplane.security.identity import totp
from modelplane.security.identity.sql import IdentityService
from modelplane.security.identity.tokens import TokenKey
from modelplane.security.risk import RiskScorer

NOW = 1_780_308_000.0  # a Monday, 10:00 UTC
PW = "correct horse battery staple"


def test_gate_end_to_end(engine: Engine) -> None:
    ids = IdentityService(engine, TokenKey.generate(), fast_hashing=True)
    ids.create_team("a", NOW)
    ids.create_user("ann", "a", "member", PW, NOW)
    signer = NoteSigner.generate("modelplane.test/audit")
    audit = AuditLog(engine, signer)
    gate = SecurityGate(ids, Authorizer(), RiskScorer(), audit)
    token = ids.login("ann", PW, NOW).access_token

    def req(cred: str | None, team: str, t: float, ip: str = "10.0.0.5", action: str = "write") -> Request:
        return Request(
            cred, action, {"type": "Job", "id": "j1", "owner_team": team}, "POST /v1/jobs", ip, t, "r"
        )

    ok = gate.check(req(token, "a", NOW))
    assert ok.principal.id == "ann" and ok.decision.allowed
    gate.record_outcome(req(token, "a", NOW), ok.principal, True)
    with pytest.raises(Forbidden, match="not allowed"):
        gate.check(req(token, "b", NOW + 1))
    with pytest.raises(AuthenticationFailed):
        gate.check(req(None, "a", NOW + 2))
    with pytest.raises(AuthenticationFailed):
        gate.check(req(token + "x", "a", NOW + 3))
    # Learning phase over, then a request from a new network without a device at night: step-up.
    for k in range(25):
        gate.check(req(token, "a", NOW + 10 + k * 30, action="read"))
    token2 = ids.login("ann", PW, NOW + 17 * 3600 - 10).access_token
    with pytest.raises(MfaRequired):
        gate.check(req(token2, "a", NOW + 17 * 3600, ip="198.51.100.9"))
    enrol = ids.enroll_totp("ann")
    t = NOW + 17 * 3600 + 5
    ids.confirm_totp("ann", totp.code_at(enrol.secret, t - 60), t - 60)
    fresh = ids.step_up(token2, totp.code_at(enrol.secret, t), t)
    assert gate.check(req(fresh.access_token, "a", t + 1, ip="198.51.100.9")).decision.allowed
    # Everything above is in the log, and the log verifies.
    audit.checkpoint(now=t + 2)
    outcomes = [audit.entry(i).entry for i in range(audit.size)]
    assert [e.outcome for e in outcomes if e is not None].count("denied") == 4
    assert verify_log(engine, [signer.verifier], "modelplane.test/audit").ok


def test_login_step_up_and_policy_changes_are_audited(engine: Engine) -> None:
    from modelplane.security.authz import PolicyStore
    from modelplane.security.authz.defaults import DEFAULT_POLICIES
    from modelplane.security.errors import InvalidPolicy

    ids = IdentityService(engine, TokenKey.generate(), fast_hashing=True)
    ids.create_team("ops", NOW)
    ids.create_user("root", "ops", "admin", PW, NOW)
    ids.create_user("ann", "ops", "member", PW, NOW)
    audit = AuditLog(engine, NoteSigner.generate("modelplane.test/audit"))
    store = PolicyStore(engine)
    gate = SecurityGate(ids, store.authorizer, RiskScorer(), audit)
    with pytest.raises(AuthenticationFailed):
        gate.login(ids, "root", "wrong password!!", now=NOW, request_id="r1", source_ip="10.0.0.1")
    root = gate.login(ids, "root", PW, now=NOW, request_id="r2", source_ip="10.0.0.1").access_token
    ann = gate.login(ids, "ann", PW, now=NOW, request_id="r3", source_ip="10.0.0.2").access_token

    def req(token: str) -> Request:
        return Request(token, "write", {}, "PUT /v1/policies", "10.0.0.1", NOW + 1, "r4")

    with pytest.raises(Forbidden):
        gate.update_policies(store, req(ann), DEFAULT_POLICIES, 0)
    with pytest.raises(InvalidPolicy):
        gate.update_policies(store, req(root), "permit(", 0)
    v = gate.update_policies(store, req(root), DEFAULT_POLICIES + "\n// v1\n", 0)
    assert v.version == 1 and gate.authorizer().version == 1
    log = [audit.entry(i).entry for i in range(audit.size)]
    summary = [(e.operation, e.outcome) for e in log if e is not None]
    assert summary == [
        ("auth.login", "denied"),
        ("auth.login", "succeeded"),
        ("auth.login", "succeeded"),
        ("PUT /v1/policies", "denied"),
        ("PUT /v1/policies", "allowed"),
        ("PUT /v1/policies", "failed"),
        ("PUT /v1/policies", "allowed"),
        ("PUT /v1/policies", "succeeded"),
    ]
