"""Attribute-based authorization with Cedar: (principal, action, resource, context) -> Decision.

The policy set is parsed once into a ``cedarpy.PolicySet``; each request only builds two entities
(the caller and the resource) from their attributes, so a decision costs tens of microseconds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cedarpy

from modelplane.core.errors import InvalidSpec
from modelplane.security.authz.defaults import DEFAULT_POLICIES, SCHEMA
from modelplane.security.errors import InvalidPolicy

ACTIONS = ("read", "write")
RESOURCE_TYPES = ("Job", "Queue", "Dataset", "Model", "Quota", "Node", "Identity", "Policy", "AuditLog")
STEP_UP_POLICY_IDS = ("step-up-mfa-when-risky", "step-up-mfa-for-restricted-data")
DEFAULT_STEP_UP_THRESHOLD = 50
DEFAULT_DENY_THRESHOLD = 80
DEFAULT_MAX_MFA_AGE_S = 900


@dataclass(frozen=True)
class Decision:
    """``reasons`` are the ``@id``s of the policies that decided, or why nothing did."""

    allowed: bool
    reasons: tuple[str, ...]
    errors: tuple[str, ...] = ()

    @property
    def step_up(self) -> bool:
        """Denied only for want of a fresh second factor: the API should answer 'MFA required'."""
        return not self.allowed and bool(self.reasons) and all(r in STEP_UP_POLICY_IDS for r in self.reasons)


def validate_policies(text: str) -> cedarpy.PolicySet:
    """Parse and type-check a policy set against the schema; raise ``InvalidPolicy`` listing every error."""
    try:
        policy_set = cedarpy.PolicySet.from_str(text)
    except ValueError as exc:
        raise InvalidPolicy(
            f"policy text does not parse: {exc}",
            hint="see https://docs.cedarpolicy.com for the syntax",
            field="policies",
        ) from exc
    result = cedarpy.validate_policies(text, SCHEMA)
    if not result.validation_passed:
        names = result.id_annotations_by_policy_id
        errors = [f"[{names.get(e.policy_id, e.policy_id)}] {e.error}" for e in result.errors]
        raise InvalidPolicy(
            "policy set fails validation: " + "; ".join(errors),
            hint="attributes and types must match the schema in modelplane.security.authz.defaults.SCHEMA",
            field="policies",
        )
    return policy_set


def _cedar_value(key: str, value: Any) -> Any:
    if isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [_cedar_value(key, v) for v in value]
    raise InvalidSpec(f"attribute {key!r} has unsupported type {type(value).__name__}", field=key)


def _attrs(raw: Mapping[str, Any], skip: tuple[str, ...]) -> dict[str, Any]:
    return {k: _cedar_value(k, v) for k, v in raw.items() if k not in skip and v is not None}


class Authorizer:
    """Holds one parsed, validated policy set (and its version) and answers decisions."""

    def __init__(
        self,
        policies: str = DEFAULT_POLICIES,
        *,
        version: int = 0,
        step_up_threshold: int = DEFAULT_STEP_UP_THRESHOLD,
        deny_threshold: int = DEFAULT_DENY_THRESHOLD,
        max_mfa_age_s: int = DEFAULT_MAX_MFA_AGE_S,
    ) -> None:
        self.policy_set = validate_policies(policies)
        self.text = policies
        self.version = version
        self.defaults = {
            "risk_score": 0,
            "step_up_threshold": step_up_threshold,
            "deny_threshold": deny_threshold,
            "max_mfa_age_s": max_mfa_age_s,
            "hour": 0,
        }

    def authorize(
        self,
        principal_attrs: Mapping[str, Any],
        action: str,
        resource_attrs: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
    ) -> Decision:
        """``principal_attrs`` needs ``id`` (see ``Principal.attributes``); ``resource_attrs`` needs
        ``type`` (one of RESOURCE_TYPES) and ``id``; ``context`` may carry ``risk_score``, ``hour``,
        ``source_ip``."""
        if action not in ACTIONS:
            raise InvalidSpec(
                f"unknown action {action!r}", hint=f"use one of {', '.join(ACTIONS)}", field="action"
            )
        rtype = resource_attrs.get("type")
        if rtype not in RESOURCE_TYPES:
            raise InvalidSpec(
                f"unknown resource type {rtype!r}",
                hint=f"use one of {', '.join(RESOURCE_TYPES)}",
                field="type",
            )
        pid = str(principal_attrs.get("id", ""))
        rid = str(resource_attrs.get("id", ""))
        if not pid:
            raise InvalidSpec("principal attributes need an 'id'", field="id")
        ctx: dict[str, Any] = {**self.defaults, "required_scope": f"{str(rtype).lower()}s:{action}"}
        ctx.update(_attrs(context or {}, ()))
        p_attrs = _attrs(principal_attrs, ("id",))
        p_attrs.setdefault("scopes", [])
        principal = {"uid": {"type": "User", "id": pid}, "attrs": p_attrs, "parents": []}
        resource = {
            "uid": {"type": rtype, "id": rid},
            "attrs": _attrs(resource_attrs, ("id", "type")),
            "parents": [],
        }
        request = {
            "principal": {"type": "User", "id": pid},
            "action": {"type": "Action", "id": action},
            "resource": {"type": rtype, "id": rid},
            "context": ctx,
        }
        result = cedarpy.is_authorized(request, self.policy_set, [principal, resource])
        diag = result.diagnostics
        names = diag.id_annotations_by_reason
        reasons = tuple(sorted(names.get(r, r) for r in diag.reasons))
        errors = tuple(json.dumps(e) if not isinstance(e, str) else e for e in diag.errors)
        if not result.allowed and not reasons:
            reasons = ("no-policy-permits",)
        return Decision(result.allowed, reasons, errors)


_default: Authorizer | None = None


def authorize(
    principal_attrs: Mapping[str, Any],
    action: str,
    resource_attrs: Mapping[str, Any],
    context: Mapping[str, Any] | None = None,
) -> Decision:
    """Decide with the default policy set (build an ``Authorizer`` for a stored version)."""
    global _default
    if _default is None:
        _default = Authorizer()
    return _default.authorize(principal_attrs, action, resource_attrs, context)
