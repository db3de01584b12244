"""ABAC: the default policy set as a role x resource x action matrix, risk/MFA forbids, versioning."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from modelplane.core.errors import Conflict, InvalidSpec
from modelplane.security.authz import RESOURCE_TYPES, Authorizer, PolicyStore, authorize
from modelplane.security.authz.defaults import DEFAULT_POLICIES
from modelplane.security.errors import InvalidPolicy
from modelplane.security.principal import Principal

NOW = 1_780_000_000.0


def attrs(p: Principal) -> dict[str, Any]:
    return {"id": p.id, **p.attributes(NOW)}


ROLES = {
    "admin": Principal("root", "user", "ops", "admin"),
    "member-own-team": Principal("ann", "user", "a", "member"),
    "member-other-team": Principal("bob", "user", "b", "member"),
    "auditor": Principal("aud", "user", "compliance", "auditor"),
    "service-scoped": Principal(
        "ci", "service", "a", "service", scopes=("jobs:read", "jobs:write", "datasets:read")
    ),
    "service-other-team": Principal("ci-b", "service", "b", "service", scopes=("jobs:read", "jobs:write")),
}

# Expected allow set: (role, resource type, action).
ALLOWED = {
    *{("member-own-team", t, a) for t in ("Job", "Queue", "Dataset") for a in ("read", "write")},
    *{("admin", t, a) for t in ("Quota", "Node", "Identity", "Policy") for a in ("read", "write")},
    ("auditor", "AuditLog", "read"),
    ("service-scoped", "Job", "read"),
    ("service-scoped", "Job", "write"),
    ("service-scoped", "Dataset", "read"),
}


@pytest.mark.parametrize("role", sorted(ROLES))
@pytest.mark.parametrize("rtype", RESOURCE_TYPES)
@pytest.mark.parametrize("action", ["read", "write"])
def test_default_policy_matrix(role: str, rtype: str, action: str) -> None:
    resource = {"type": rtype, "id": "r1", "owner_team": "a"}
    decision = authorize(attrs(ROLES[role]), action, resource, {"risk_score": 0})
    assert decision.allowed == ((role, rtype, action) in ALLOWED), decision
    assert decision.reasons  # always explained


def test_risk_thresholds_step_up_then_deny() -> None:
    ann = ROLES["member-own-team"]
    job = {"type": "Job", "id": "j", "owner_team": "a"}
    assert authorize(attrs(ann), "read", job, {"risk_score": 49}).allowed
    risky = authorize(attrs(ann), "read", job, {"risk_score": 50})
    assert not risky.allowed and risky.step_up and risky.reasons == ("step-up-mfa-when-risky",)
    fresh = Principal("ann", "user", "a", "member", mfa_at=NOW - 60)
    assert authorize(attrs(fresh), "read", job, {"risk_score": 79}).allowed
    stale = Principal("ann", "user", "a", "member", mfa_at=NOW - 3600)
    assert authorize(attrs(stale), "read", job, {"risk_score": 79}).step_up
    critical = authorize(attrs(fresh), "read", job, {"risk_score": 80})
    assert not critical.allowed and not critical.step_up and "deny-when-risk-is-critical" in critical.reasons


def test_restricted_dataset_writes_need_fresh_mfa() -> None:
    ds = {"type": "Dataset", "id": "pii", "owner_team": "a", "sensitivity": "restricted"}
    assert authorize(attrs(ROLES["member-own-team"]), "read", ds).allowed
    assert authorize(attrs(ROLES["member-own-team"]), "write", ds).step_up
    fresh = Principal("ann", "user", "a", "member", mfa_at=NOW - 10)
    assert authorize(attrs(fresh), "write", ds).allowed


def test_bad_requests_name_the_problem() -> None:
    with pytest.raises(InvalidSpec, match="unknown action"):
        authorize(attrs(ROLES["admin"]), "delete", {"type": "Job", "id": "x"})
    with pytest.raises(InvalidSpec, match="unknown resource type"):
        authorize(attrs(ROLES["admin"]), "read", {"type": "Spaceship", "id": "x"})


def test_invalid_policies_are_refused_with_the_reason() -> None:
    with pytest.raises(InvalidPolicy, match="does not parse"):
        Authorizer("permit(principal, action, resource) when {")
    with pytest.raises(InvalidPolicy, match=r"\[members-use-their-teams-jobs-queues-datasets\].*owner_tem"):
        Authorizer(
            DEFAULT_POLICIES.replace(
                "resource.owner_team == principal.team", "resource.owner_tem == principal.team", 1
            )
        )


def test_policy_versions_on_sql(engine: Engine) -> None:
    store = PolicyStore(engine)
    assert store.current().version == 0
    stricter = (
        DEFAULT_POLICIES
        + '\n@id("freeze-nodes")\nforbid (principal, action == Action::"write", resource is Node);\n'
    )
    v1 = store.update(stricter, author="root", now=NOW, expected_version=0)
    assert v1.version == 1 and store.current().text == stricter
    with pytest.raises(Conflict, match="version 1, not 0"):
        store.update(DEFAULT_POLICIES, author="root", now=NOW, expected_version=0)
    with pytest.raises(InvalidPolicy):
        store.update("nonsense", author="root", now=NOW, expected_version=1)
    assert [v.version for v in store.history()] == [1]
    authz = store.authorizer()
    node = {"type": "Node", "id": "n1"}
    assert authz.version == 1
    assert not authz.authorize(attrs(ROLES["admin"]), "write", node).allowed
    assert authz.authorize(attrs(ROLES["admin"]), "read", node).allowed
    assert store.get(0).text == DEFAULT_POLICIES


def test_store_authorizer_is_cached_until_the_version_changes(engine: Engine) -> None:
    store = PolicyStore(engine)
    first = store.authorizer()
    assert store.authorizer() is first
    store.update(DEFAULT_POLICIES + "\n// v1\n", author="root", now=NOW, expected_version=0)
    second = PolicyStore(engine).authorizer()  # another process sees the new version too
    assert store.authorizer() is not first and store.authorizer().version == second.version == 1
