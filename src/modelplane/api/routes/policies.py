"""The active Cedar policy set: read it, or replace it with a validated new version."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from modelplane.api.security import ApiSecurity, request_context
from modelplane.security.authz.sql import PolicyVersion

router = APIRouter(tags=["policies"])


def _security(request: Request) -> ApiSecurity:
    sec: ApiSecurity = request.app.state.security
    return sec


Security = Annotated[ApiSecurity, Depends(_security)]


class PoliciesIn(BaseModel):
    text: str = Field(min_length=1, max_length=200_000, description="the whole Cedar policy set")
    expected_version: int = Field(ge=0, description="the version you edited; a newer one answers 409")


def view(v: PolicyVersion) -> dict[str, Any]:
    return {"version": v.version, "text": v.text, "author": v.author, "created_at": v.created_at}


@router.get("/policies")
def get_policies(sec: Security) -> dict[str, Any]:
    return view(sec.policy_store.current())


@router.put("/policies")
def put_policies(body: PoliciesIn, request: Request, sec: Security) -> dict[str, Any]:
    """Validated against the schema, stored as ``expected_version + 1``, in force at once."""
    _, rs = request_context(request)
    assert rs.admitted is not None
    version = sec.policy_store.update(body.text, author=rs.admitted.principal.id, now=time.time(),
                                      expected_version=body.expected_version)
    sec.policies.invalidate()
    rs.extra["version"] = str(version.version)
    return view(version)
