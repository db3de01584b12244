"""The control plane's side of sensitive datasets: the catalog of protected datasets (with their
wrapped data keys), the per-launch job credentials that key release authenticates, and each node's
latest TEE attestation. Tables created by store migration 0004; SQLite and PostgreSQL alike.

Job credentials are stored as SHA-256 hashes only (a database reader cannot act as a job); a
relaunch mints a new one, so a credential dies with the attempt that received it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Column, Float, MetaData, String, Table, Text, delete, insert, select, update

from modelplane.core.errors import Conflict
from modelplane.data.sensitive import JOB_TOKEN_PREFIX, DataKey, normalize_uri, wrap_key
from modelplane.privacy.tee import AttestationResult
from modelplane.store import Store

metadata = MetaData()

sensitive_datasets = Table(
    "sensitive_datasets",
    metadata,
    Column("uri", String(1024), primary_key=True),
    Column("team", String(63), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("wrapped_key", Text, nullable=False),  # base64(nonce | AES-GCM(master key, DEK))
    Column("created_by", String(255), nullable=False),
    Column("created_at", Float, nullable=False),
)

job_credentials = Table(
    "job_credentials",
    metadata,
    Column("job_id", String(32), primary_key=True),  # FK jobs.id ON DELETE CASCADE (in the migration)
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

node_attestations = Table(
    "node_attestations",
    metadata,
    Column("node", String(253), primary_key=True),  # FK nodes.name ON DELETE CASCADE (in the migration)
    Column("result", JSON, nullable=False),  # AttestationResult.to_dict()
    Column("quote_sha256", String(64), nullable=False),
    Column("recorded_at", Float, nullable=False),
)


@dataclass(frozen=True)
class SensitiveDataset:
    uri: str
    team: str
    key_id: str
    wrapped_key: str
    created_by: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        """The public view: never the wrapped key."""
        return {"uri": self.uri, "sensitive": True, "team": self.team, "keyId": self.key_id,
                "createdBy": self.created_by, "createdAt": self.created_at}


def _row(r: Any) -> SensitiveDataset:
    return SensitiveDataset(r.uri, r.team, r.key_id, r.wrapped_key, r.created_by, r.created_at)


def protect(store: Store, uri: str, team: str, data_key: DataKey, master_key: bytes, by: str) -> tuple[SensitiveDataset, bool]:
    """Mark ``uri`` sensitive with this data key; returns (entry, created). Marking it again with the
    same key id is a no-op; another key is a conflict (files encrypted with the first would be lost)."""
    uri = normalize_uri(uri)
    with store.engine.begin() as c:
        found = c.execute(select(sensitive_datasets).where(sensitive_datasets.c.uri == uri)).first()
        if found is not None:
            if found.key_id != data_key.key_id:
                raise Conflict(f"dataset {uri} is already sensitive, with key {found.key_id}",
                               hint="its files are encrypted with that key; write new data under a new URI",
                               field="keyId")
            return _row(found), False
        c.execute(insert(sensitive_datasets).values(
            uri=uri, team=team, key_id=data_key.key_id, wrapped_key=wrap_key(master_key, uri, data_key),
            created_by=by, created_at=store.clock()))
    got = get(store, uri)
    assert got is not None
    return got, True


def get(store: Store, uri: str) -> SensitiveDataset | None:
    with store.engine.connect() as c:
        r = c.execute(select(sensitive_datasets).where(sensitive_datasets.c.uri == normalize_uri(uri))).first()
    return None if r is None else _row(r)


def list_all(store: Store, team: str | None = None) -> list[SensitiveDataset]:
    q = select(sensitive_datasets).order_by(sensitive_datasets.c.uri)
    if team is not None:
        q = q.where(sensitive_datasets.c.team == team)
    with store.engine.connect() as c:
        return [_row(r) for r in c.execute(q)]


def sensitive_among(store: Store, uris: list[str]) -> list[str]:
    """Which of these (normalized) URIs are marked sensitive."""
    if not uris:
        return []
    with store.engine.connect() as c:
        rows = c.execute(select(sensitive_datasets.c.uri).where(sensitive_datasets.c.uri.in_(uris)))
        return sorted(r.uri for r in rows)


def check_submission(store: Store, manifest: Any) -> None:
    """Refuse at apply a job that declares a sensitive dataset in ``spec.datasets`` but is not
    confidential (``spec.tee`` unset): it would only be refused at key release, after holding a
    placement. Each declared URI must be absolute, as the catalog names datasets."""
    from modelplane.core.errors import InvalidSpec
    from modelplane.data.errors import DataError
    from modelplane.privacy.tee import requirement_for_tee, submission_refusal

    uris = []
    for i, raw in enumerate(manifest.spec.datasets):
        try:
            uris.append(normalize_uri(raw))
        except DataError as exc:
            raise InvalidSpec(f"spec.datasets.{i}: {exc.message}", hint=exc.hint, field=f"spec.datasets.{i}") from None
    why = submission_refusal(manifest.metadata.name, sensitive_among(store, uris), requirement_for_tee(manifest.spec.tee))
    if why:
        raise InvalidSpec(why, field="spec.tee", hint="add 'tee: any' (or sgx / tdx) to the spec, so that the job "
                          "runs only on attested TEE nodes, or remove the dataset from spec.datasets")


# --------------------------------------------------------------------------- job credentials
def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mint_job_token(store: Store, job_id: str) -> str:
    """A new credential for this launch of a job (replacing the last one); only its hash is kept."""
    token = JOB_TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store.engine.begin() as c:
        c.execute(delete(job_credentials).where(job_credentials.c.job_id == job_id))
        c.execute(insert(job_credentials).values(job_id=job_id, token_hash=_hash(token), created_at=store.clock()))
    return token


def job_for_token(store: Store, token: str) -> str | None:
    """The id of the job holding this credential, or None."""
    if not token.startswith(JOB_TOKEN_PREFIX):
        return None
    with store.engine.connect() as c:
        r = c.execute(select(job_credentials.c.job_id).where(job_credentials.c.token_hash == _hash(token))).first()
    return None if r is None else str(r.job_id)


# --------------------------------------------------------------------------- node attestations
def record_attestation(store: Store, node: str, result: AttestationResult, quote: bytes) -> None:
    digest = hashlib.sha256(quote).hexdigest()
    values = {"result": result.to_dict(), "quote_sha256": digest, "recorded_at": store.clock()}
    with store.engine.begin() as c:
        done = c.execute(update(node_attestations).where(node_attestations.c.node == node).values(**values))
        if done.rowcount == 0:
            c.execute(insert(node_attestations).values(node=node, **values))


def attestations(store: Store, nodes: list[str]) -> dict[str, AttestationResult | None]:
    """Each node's latest recorded attestation (None: never attested)."""
    out: dict[str, AttestationResult | None] = dict.fromkeys(nodes)
    if not nodes:
        return out
    with store.engine.connect() as c:
        for r in c.execute(select(node_attestations).where(node_attestations.c.node.in_(nodes))):
            out[r.node] = AttestationResult.from_dict(r.result)
    return out


def launch_env(store: Store, job_id: str, api_url: str | None = None) -> dict[str, str]:
    """What the job controller adds to every task of a launch: the control plane's URL and this
    launch's job credential, for ``modelplane.data.sensitive`` to ask for data keys with."""
    if api_url is None:
        from modelplane.settings import Settings

        api_url = Settings().resolved_api_url
    from modelplane.data.sensitive import API_URL_ENV, JOB_TOKEN_ENV

    return {API_URL_ENV: api_url, JOB_TOKEN_ENV: mint_job_token(store, job_id)}


__all__ = ["SensitiveDataset", "attestations", "check_submission", "get", "job_for_token", "launch_env", "list_all", "metadata",
           "mint_job_token", "protect", "record_attestation", "sensitive_among"]
