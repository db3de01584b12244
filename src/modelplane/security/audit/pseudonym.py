"""Pseudonymous operators, so an erasure request never has to touch the Merkle tree.

Each subject gets a random 256-bit key; entries carry ``psn:`` + HMAC(key, subject). Erasing the
subject destroys the key and the mapping: old entries keep verifying but no longer name anyone.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import Column, Engine, Float, LargeBinary, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

PREFIX = "psn:"

metadata = MetaData()

subject_keys = Table(
    "security_audit_subject_keys",
    metadata,
    Column("subject", String(128), primary_key=True),
    Column("pseudonym", String(40), nullable=True, unique=True),
    Column("key", LargeBinary(32), nullable=True),  # NULL once erased
    Column("created_at", Float, nullable=False),
    Column("erased_at", Float, nullable=True),
)

TABLE_NAMES = tuple(metadata.tables)


class Pseudonymizer:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, str] = {}
        metadata.create_all(engine)

    def pseudonym(self, subject: str, now: float) -> str:
        """Stable pseudonym for ``subject`` (a new one after an erasure)."""
        cached = self._cache.get(subject)
        if cached is not None:
            return cached
        with self.engine.begin() as conn:
            row = conn.execute(select(subject_keys).where(subject_keys.c.subject == subject)).first()
            if row is not None and row.key is not None:
                psn = str(row.pseudonym)
            else:
                key = secrets.token_bytes(32)
                psn = PREFIX + hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()[:32]
                values = {"pseudonym": psn, "key": key, "created_at": now, "erased_at": None}
                if row is None:
                    try:
                        conn.execute(insert(subject_keys).values(subject=subject, **values))
                    except IntegrityError:  # another writer created it first: use theirs
                        return self.pseudonym(subject, now)
                else:
                    conn.execute(
                        update(subject_keys).where(subject_keys.c.subject == subject).values(**values)
                    )
        self._cache[subject] = psn
        return psn

    def resolve(self, pseudonym: str) -> str | None:
        """The subject behind a pseudonym, or None if it was erased (or never existed)."""
        if not pseudonym.startswith(PREFIX):
            return pseudonym
        with self.engine.connect() as conn:
            row = conn.execute(
                select(subject_keys.c.subject).where(subject_keys.c.pseudonym == pseudonym)
            ).first()
        return None if row is None else str(row.subject)

    def erase(self, subject: str, now: float) -> bool:
        """Destroy the subject's key and link; returns False if there was nothing to erase."""
        self._cache.pop(subject, None)
        with self.engine.begin() as conn:
            n = conn.execute(
                update(subject_keys)
                .where(subject_keys.c.subject == subject, subject_keys.c.key.is_not(None))
                .values(key=None, pseudonym=None, erased_at=now)
            ).rowcount
        return bool(n)
