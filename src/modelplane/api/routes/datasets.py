"""Sensitive datasets and secure key release (``modelplane.data.sensitive``), and the TEE attestation
of nodes that key release depends on.

* ``PUT /datasets/{uri}`` marks a dataset sensitive and hands the platform its data key, which is
  stored only wrapped by the master key under ``<home>/keys``; the owning team's members write it.
* ``POST /datasets/key-release`` is called by a running job with its per-launch credential
  (``$MODELPLANE_JOB_TOKEN``, not a user's): the key is released only to a confidential job whose
  every node holds a fresh, successful attestation (``privacy.tee.key_release_allowed``). Every
  release and every refusal goes to the audit log, with the reason.
* ``POST /nodes/{name}/attestation`` verifies a node's SGX/TDX DCAP quote with its collateral at the
  control plane's clock (``privacy.tee.attest``) and records the verdict, failures included.

Names may hold slashes (``s3://bucket/x``), hence the ``path`` converter; clients percent-encode them.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from modelplane.api.app import AppState, get_state
from modelplane.api.security import ApiSecurity, audit_public, bearer, request_context, team_scope
from modelplane.core.errors import Forbidden, InvalidSpec, ModelplaneError, NotFound
from modelplane.core.job import JobState
from modelplane.data.sensitive import DataKey, load_or_create_master_key, normalize_uri, unwrap_key
from modelplane.privacy.tee import attest, key_release_allowed, requirement_for_tee
from modelplane.security.errors import AuthenticationFailed
from modelplane.store import sensitive_catalog as catalog

router = APIRouter(tags=["datasets"])
public_router = APIRouter(tags=["datasets"])
State = Annotated[AppState, Depends(get_state)]
RELEASE_STATES = (JobState.ADMITTED, JobState.RUNNING)
"""A job asks for keys while its tasks run; Admitted too, as they may start before Running is written."""


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ProtectIn(_In):
    sensitive: bool = Field(default=True, description="must be true: a protected dataset stays protected")
    key_id: str = Field(alias="keyId", min_length=32, max_length=32, description="32 hex digits")
    data_key: str = Field(alias="dataKey", description="base64 of the 32-byte AES-256 data key")
    team: str | None = Field(default=None, max_length=63, description="owning team; default: the caller's")


class KeyReleaseIn(_In):
    uri: str = Field(min_length=1, max_length=1100)


class AttestationIn(_In):
    quote: str = Field(min_length=1, description="the DCAP quote, base64")
    collateral: str | dict[str, Any] = Field(description="its collateral (dcap_qvl.get_collateral JSON)")


def _master_key(sec: ApiSecurity) -> bytes:
    return load_or_create_master_key(sec.home)


# --------------------------------------------------------------------------- catalog
@router.get("/datasets")
def list_datasets(state: State, team: str | None = None,
                  visible_team: Annotated[str | None, Depends(team_scope)] = None) -> dict[str, Any]:
    """Sensitive datasets of the caller's team (admins: every team's)."""
    return {"items": [d.to_dict() for d in catalog.list_all(state.store, team or visible_team)]}


@router.get("/datasets/{uri:path}")
def get_dataset(uri: str, state: State) -> dict[str, Any]:
    """Whether a dataset is sensitive, and its key id (never the key)."""
    found = catalog.get(state.store, uri)
    return found.to_dict() if found else {"uri": normalize_uri(uri), "sensitive": False}


@router.put("/datasets/{uri:path}")
def protect_dataset(uri: str, body: ProtectIn, request: Request, response: Response, state: State) -> dict[str, Any]:
    """Mark a dataset sensitive with the data key its files are (or are about to be) encrypted with.
    The same key again is a no-op (200); another key for a protected dataset is 409."""
    if not body.sensitive:
        raise InvalidSpec("a sensitive dataset cannot be made readable again through the catalog", field="sensitive",
                          hint="its files are encrypted; write a plaintext copy under a new URI from a confidential job")
    sec, rs = request_context(request)
    principal = rs.admitted.principal if rs.admitted else None
    team = body.team or (principal.team if principal else "default")
    key = DataKey.from_json({"keyId": body.key_id, "dataKey": body.data_key})
    entry, created = catalog.protect(state.store, uri, team, key, _master_key(sec),
                                     by=principal.id if principal else "unknown")
    rs.extra.update({"dataset": entry.uri, "keyId": entry.key_id})
    response.status_code = 201 if created else 200
    return entry.to_dict() | {"created": created}


# --------------------------------------------------------------------------- key release
@public_router.post("/datasets/key-release")
def key_release(body: KeyReleaseIn, request: Request, state: State) -> dict[str, Any]:
    """A running job's request for a sensitive dataset's data key (secure key release)."""
    sec, _ = request_context(request)
    store = state.store
    uri = normalize_uri(body.uri)
    resource = f"Dataset/{uri}"
    token = bearer(request) or ""
    job_id = catalog.job_for_token(store, token) if token else None
    job = None
    if job_id is not None:
        try:
            job = store.get_job(job_id)
        except NotFound:
            job = None
    if job is None:
        audit_public(request, "unknown", "denied", resource, {"reason": "no valid job credential"})
        raise AuthenticationFailed("key release needs the credential of a job the platform launched",
                                   hint="send 'Authorization: Bearer $MODELPLANE_JOB_TOKEN' from inside the job")
    operator = f"job:{job.name}"
    entry = catalog.get(store, uri)
    if entry is None:
        audit_public(request, operator, "denied", resource, {"job": job.name, "reason": "dataset is not sensitive"})
        raise NotFound(f"dataset {uri} is not sensitive and has no key",
                       hint="read it directly; only datasets marked with 'modelplane data protect' have keys")
    manifest = job.manifest
    running = job.state in RELEASE_STATES and job.placement is not None and not job.cancel_requested
    nodes = sorted({a.node for a in job.placement.assignments}) if running and job.placement else []
    declared = set()
    for d in manifest.spec.datasets:
        try:
            declared.add(normalize_uri(d))
        except ModelplaneError:
            continue  # refused at apply; a relative path can never match
    decision = key_release_allowed(uri, job.name, requirement_for_tee(manifest.spec.tee),
                                   catalog.attestations(store, nodes) if nodes else None, int(store.clock()),
                                   declared=uri in declared)
    details = {"job": job.name, "jobState": job.state.value, "nodes": ",".join(nodes), "keyId": entry.key_id,
               "reason": decision.reason}
    if not decision:
        audit_public(request, operator, "denied", resource, details)
        raise Forbidden(decision.reason, field="job", hint="sensitive data is released only to jobs with spec.tee "
                        "set, declaring it in spec.datasets, on nodes with a fresh successful TEE attestation")
    key = unwrap_key(_master_key(sec), uri, entry.key_id, entry.wrapped_key)
    audit_public(request, operator, "succeeded", resource, details)
    return {"uri": uri, **key.to_json()}


# --------------------------------------------------------------------------- node attestation
@router.post("/nodes/{name}/attestation", status_code=201)
def record_attestation(name: str, body: AttestationIn, request: Request, state: State) -> dict[str, Any]:
    """Verify the node's quote against its collateral now (the control plane's clock) and record the
    verdict; a failed verification is recorded too (``ok: false``), so the node loses its standing."""
    store = state.store
    store.get_node(name)  # 404 for an unknown node
    try:
        quote = base64.b64decode(body.quote, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSpec("quote is not base64", field="quote", hint="send the raw DCAP quote bytes, base64") from None
    collateral = body.collateral if isinstance(body.collateral, str) else json.dumps(body.collateral)
    result = attest(quote, collateral, int(store.clock()))
    catalog.record_attestation(store, name, result, quote)
    _, rs = request_context(request)
    rs.extra.update({"ok": str(result.ok).lower(), "tee": result.tee, "status": result.status,
                     "error": result.error[:200]})
    return {"node": name, **result.to_dict()}


@router.get("/nodes/{name}/attestation")
def get_attestation(name: str, state: State) -> dict[str, Any]:
    store = state.store
    store.get_node(name)
    found = catalog.attestations(store, [name])[name]
    if found is None:
        raise NotFound(f"node {name!r} has no recorded attestation",
                       hint=f"POST its quote and collateral to /api/v1/nodes/{name}/attestation")
    return {"node": name, **found.to_dict()}


__all__ = ["public_router", "router"]
