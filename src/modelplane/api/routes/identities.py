"""Admins create teams, users, service accounts and service-account API keys."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from modelplane.api.security import ApiSecurity

router = APIRouter(tags=["identities"])
NAME = r"^[a-z0-9]([-a-z0-9_.]{0,126}[a-z0-9])?$"


def _security(request: Request) -> ApiSecurity:
    sec: ApiSecurity = request.app.state.security
    return sec


Security = Annotated[ApiSecurity, Depends(_security)]


class TeamIn(BaseModel):
    name: str = Field(pattern=NAME)


class UserIn(BaseModel):
    name: str = Field(pattern=NAME)
    team: str = Field(pattern=NAME)
    role: str = Field(default="member", description="admin, member or auditor")
    password: str = Field(min_length=12, max_length=1024, description="at least 12 characters")


class ServiceAccountIn(BaseModel):
    name: str = Field(pattern=NAME)
    team: str = Field(pattern=NAME)


class ApiKeyIn(BaseModel):
    scopes: list[str] = Field(min_length=1, description="e.g. ['jobs:read', 'jobs:write']")
    ttl_s: float | None = Field(default=None, gt=0)


@router.post("/teams", status_code=201)
def create_team(body: TeamIn, sec: Security) -> dict[str, str]:
    sec.identities.create_team(body.name, time.time())
    return {"name": body.name}


@router.post("/users", status_code=201)
def create_user(body: UserIn, sec: Security) -> dict[str, str]:
    sec.identities.create_user(body.name, body.team, body.role, body.password, time.time())
    return {"name": body.name, "team": body.team, "role": body.role}


@router.post("/service-accounts", status_code=201)
def create_service_account(body: ServiceAccountIn, sec: Security) -> dict[str, str]:
    sec.identities.create_service_account(body.name, body.team, time.time())
    return {"name": body.name, "team": body.team}


@router.post("/service-accounts/{name}/api-keys", status_code=201)
def issue_api_key(name: str, body: ApiKeyIn, sec: Security) -> dict[str, Any]:
    """The key is shown once; only its hash is stored."""
    key = sec.identities.issue_api_key(name, body.scopes, time.time(), body.ttl_s)
    return {"account": name, "key": key, "scopes": sorted(body.scopes)}
