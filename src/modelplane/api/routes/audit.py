"""The audit transparency log: entries, the latest signed checkpoint, proofs, and a full verify."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from modelplane.api.security import AUDIT_ORIGIN, ApiSecurity
from modelplane.security.audit.note import open_checkpoint
from modelplane.security.audit.sql import entries_table, verify_log
from modelplane.security.errors import InvalidProof

router = APIRouter(prefix="/audit", tags=["audit"])


def _security(request: Request) -> ApiSecurity:
    sec: ApiSecurity = request.app.state.security
    return sec


Security = Annotated[ApiSecurity, Depends(_security)]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@router.get("/entries")
def list_entries(sec: Security, offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Entries in index order from ``offset``; a pruned entry has ``entry: null`` (its hash remains)."""
    with sec.audit_engine.connect() as conn:
        rows = conn.execute(
            select(entries_table.c.idx, entries_table.c.leaf_hash, entries_table.c.body)
            .where(entries_table.c.idx >= offset).order_by(entries_table.c.idx).limit(limit)
        ).all()
    items = [{"index": int(r.idx), "leaf_hash": b64(bytes(r.leaf_hash)),
              "entry": None if r.body is None else _readable(sec, json.loads(r.body))} for r in rows]
    size = sec.log.size
    nxt = offset + len(items)
    return {"items": items, "size": size, "next": nxt if nxt < size else None}


def _readable(sec: ApiSecurity, entry: dict[str, Any]) -> dict[str, Any]:
    """The stored entry, with its pseudonymous operator resolved for the auditor (None once erased)."""
    stored = entry.get("operator")
    if isinstance(stored, str) and stored.startswith("psn:"):
        entry["operator_pseudonym"] = stored
        entry["operator"] = sec.pseudonymizer.resolve(stored)
    return entry


def _latest(sec: ApiSecurity) -> str:
    note = sec.log.latest_checkpoint()
    if note is None or open_checkpoint(note, [sec.verifier]).size < sec.log.size:
        note = sec.checkpoint_now()  # never serve a checkpoint older than what this server wrote
    return note


@router.get("/checkpoint")
def checkpoint(sec: Security) -> dict[str, Any]:
    """The latest signed checkpoint (C2SP signed note) and the verifier key that checks it."""
    note = _latest(sec)
    cp = open_checkpoint(note, [sec.verifier], AUDIT_ORIGIN)
    return {"note": note, "origin": cp.origin, "size": cp.size, "root_hash": b64(cp.root_hash),
            "verifier_key": sec.verifier.vkey}


@router.get("/proof/inclusion")
def inclusion_proof(sec: Security, index: Annotated[int, Query(ge=0)],
                    size: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
    """Audit path of entry ``index`` in the tree of ``size`` entries (default: the latest checkpoint's)."""
    if size is None:
        size = open_checkpoint(_latest(sec), [sec.verifier]).size
    if not index < size <= sec.log.size:
        raise InvalidProof(f"no entry {index} in a tree of {size} (the log has {sec.log.size} entries)",
                           hint="pick index < size <= the checkpoint's size", field="index")
    stored = sec.log.entry(index)
    return {"index": index, "size": size, "leaf_hash": b64(stored.leaf_hash),
            "proof": [b64(h) for h in sec.log.inclusion_proof(index, size)],
            "entry": None if stored.entry is None else json.loads(stored.entry.canonical(index))}


@router.get("/proof/consistency")
def consistency_proof(sec: Security, old: Annotated[int, Query(ge=1)],
                      new: Annotated[int, Query(ge=1)]) -> dict[str, Any]:
    """Proof that the tree of ``new`` entries extends the tree of ``old`` entries unchanged."""
    if not old <= new <= sec.log.size:
        raise InvalidProof(f"cannot prove {old} -> {new} (the log has {sec.log.size} entries)",
                           hint="pick 1 <= old <= new <= the log's size", field="old")
    return {"old": old, "new": new, "proof": [b64(h) for h in sec.log.consistency_proof(old, new)]}


@router.post("/verify")
def verify(sec: Security) -> dict[str, Any]:
    """Re-derive every leaf hash and signed checkpoint from the database; name the first bad entry."""
    report = verify_log(sec.audit_engine, [sec.verifier], AUDIT_ORIGIN)
    return {"ok": report.ok, "size": report.size, "checkpoints_checked": report.checkpoints_checked,
            "entries_checked": report.entries_checked, "pruned": report.pruned,
            "first_bad_index": report.first_bad_index, "problem": report.problem}


class ErasureRequest(BaseModel):
    subject: str = Field(min_length=1, max_length=253, description="the operator whose identity is to be erased")


@router.post("/erase")
def erase_subject(body: ErasureRequest, sec: Security) -> dict[str, Any]:
    """Honour an erasure request: destroy the subject's pseudonym key. Their entries stay in the tree
    (every proof still verifies) but can no longer be linked to them."""
    import time

    erased = sec.pseudonymizer.erase(body.subject, time.time())
    return {"subject": body.subject, "erased": erased}
