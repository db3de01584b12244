"""The audit transparency log persisted in SQL (SQLite or PostgreSQL through SQLAlchemy 2 Core).

Rows hold the canonical entry body and its leaf hash; pruning blanks the body but keeps the hash, so
the tree, every checkpoint and every proof stay verifiable after retention has run. Appends take a
write lock on the one-row head table first, so concurrent writers (threads or processes) serialise
and indexes never collide.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from modelplane.security.audit.entry import AuditEntry
from modelplane.security.audit.merkle import MerkleTree, leaf_hash
from modelplane.security.audit.note import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    sign_checkpoint,
)
from modelplane.security.audit.pseudonym import PREFIX as PSEUDONYM_PREFIX
from modelplane.security.audit.pseudonym import Pseudonymizer
from modelplane.security.errors import InvalidProof, SecurityConfigError

DAY = 86_400.0
DEFAULT_RETENTION_S = 183 * DAY  # six months
MIN_RETENTION_S = 1 * DAY

metadata = MetaData()

entries_table = Table(
    "security_audit_entries",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("body", Text, nullable=True),  # NULL once pruned by retention
    Column("timestamp", Float, nullable=False, index=True),
)

head_table = Table(
    "security_audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
)

checkpoints_table = Table(
    "security_audit_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

TABLE_NAMES = tuple(metadata.tables)


def create_tables(engine: Engine) -> None:
    """Create the audit tables if missing (the store's migrations may do this instead)."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        if conn.execute(select(head_table.c.size).where(head_table.c.id == 1)).first() is None:
            conn.execute(insert(head_table).values(id=1, size=0))


def make_sqlite_durable(engine: Engine) -> Engine:
    """WAL + synchronous=FULL: a committed append survives ``kill -9`` and power loss."""
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: object, _record: object) -> None:
            cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

    return engine


@dataclass(frozen=True)
class StoredEntry:
    index: int
    leaf_hash: bytes
    entry: AuditEntry | None  # None when the body was pruned


class AuditLog:
    """Append-only Merkle log over the audit tables; one instance per process is enough."""

    def __init__(
        self,
        engine: Engine,
        signer: NoteSigner,
        *,
        origin: str | None = None,
        pseudonymizer: Pseudonymizer | None = None,
    ) -> None:
        self.engine = engine
        self.pseudonymizer = pseudonymizer
        self.signer = signer
        self.origin = origin or signer.name
        self._tree = MerkleTree()
        self._lock = threading.Lock()
        create_tables(engine)
        with engine.connect() as conn:
            self._catch_up(conn, self._head_size(conn))

    # ----------------------------------------------------------------- writing
    def _head_size(self, conn: Connection) -> int:
        size = conn.execute(select(head_table.c.size).where(head_table.c.id == 1)).scalar_one()
        return int(size)

    def _catch_up(self, conn: Connection, size: int) -> None:
        """Load leaf hashes other writers appended since we last looked."""
        if size <= self._tree.size:
            return
        rows = conn.execute(
            select(entries_table.c.leaf_hash)
            .where(entries_table.c.idx >= self._tree.size, entries_table.c.idx < size)
            .order_by(entries_table.c.idx)
        )
        for (h,) in rows:
            self._tree.append(bytes(h))
        if self._tree.size != size:
            raise InvalidProof(
                f"audit log is missing entries: head says {size}, rows give {self._tree.size}",
                hint="run `modelplane audit verify` to locate the damage",
            )

    def append(self, entries: Sequence[AuditEntry]) -> list[int]:
        """Append a batch durably in one transaction; returns the indexes given to the entries."""
        if not entries:
            return []
        if self.pseudonymizer is not None:
            psn = self.pseudonymizer
            entries = [
                dataclasses.replace(e, operator=psn.pseudonym(e.operator, e.timestamp))
                if e.operator and not e.operator.startswith(PSEUDONYM_PREFIX)
                else e
                for e in entries
            ]
        with self._lock, self.engine.begin() as conn:
            # The no-op UPDATE takes the write lock first (row lock on PostgreSQL, db lock on SQLite).
            conn.execute(update(head_table).where(head_table.c.id == 1).values(size=head_table.c.size))
            size = self._head_size(conn)
            self._catch_up(conn, size)
            rows = []
            hashes = []
            for offset, entry in enumerate(entries):
                body = entry.canonical(size + offset)
                h = leaf_hash(body)
                hashes.append(h)
                rows.append(
                    {
                        "idx": size + offset,
                        "leaf_hash": h,
                        "body": body.decode(),
                        "timestamp": entry.timestamp,
                    }
                )
            conn.execute(insert(entries_table), rows)
            conn.execute(update(head_table).where(head_table.c.id == 1).values(size=size + len(rows)))
        # Only after the commit succeeded does the in-memory tree move on.
        self._tree.extend(hashes)
        return list(range(size, size + len(rows)))

    def record(self, entry: AuditEntry) -> int:
        return self.append([entry])[0]

    # ----------------------------------------------------------------- reading
    @property
    def size(self) -> int:
        return self._tree.size

    def refresh(self) -> int:
        """Pick up entries appended by other processes; returns the new size."""
        with self._lock, self.engine.connect() as conn:
            self._catch_up(conn, self._head_size(conn))
        return self._tree.size

    def root(self, size: int | None = None) -> bytes:
        return self._tree.root(size)

    def entry(self, index: int) -> StoredEntry:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(entries_table.c.leaf_hash, entries_table.c.body).where(entries_table.c.idx == index)
            ).first()
        if row is None:
            raise InvalidProof(f"audit entry {index} does not exist", hint=f"the log has {self.size} entries")
        entry = None if row.body is None else AuditEntry.from_canonical(row.body.encode())[1]
        return StoredEntry(index, bytes(row.leaf_hash), entry)

    def operator_of(self, stored: StoredEntry) -> str | None:
        """The real operator behind a pseudonymised entry; None if erased or pruned."""
        if stored.entry is None:
            return None
        if self.pseudonymizer is None:
            return stored.entry.operator
        return self.pseudonymizer.resolve(stored.entry.operator)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return self._tree.inclusion_proof(index, size)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return self._tree.consistency_proof(size1, size2)

    # ------------------------------------------------------------- checkpoints
    def checkpoint(self, now: float) -> str:
        """Sign (origin, size, root) of the current tree, store it, and return the signed note."""
        with self._lock, self.engine.begin() as conn:
            self._catch_up(conn, self._head_size(conn))
            size = self._tree.size
            existing = conn.execute(
                select(checkpoints_table.c.note).where(checkpoints_table.c.size == size)
            ).scalar_one_or_none()
            if existing is not None:
                return str(existing)
            root = self._tree.root(size)
            note = sign_checkpoint(self.signer, Checkpoint(self.origin, size, root))
            conn.execute(
                insert(checkpoints_table).values(size=size, root_hash=root, note=note, created_at=now)
            )
        return note

    def latest_checkpoint(self) -> str | None:
        with self.engine.connect() as conn:
            note = conn.execute(
                select(checkpoints_table.c.note).order_by(checkpoints_table.c.size.desc()).limit(1)
            ).scalar_one_or_none()
        return None if note is None else str(note)

    # --------------------------------------------------------------- retention
    def prune(self, now: float, retention_s: float = DEFAULT_RETENTION_S) -> int:
        """Blank the bodies of entries older than the retention window that a checkpoint covers.

        Leaf hashes stay, so the tree and all proofs are unchanged; returns how many were pruned.
        """
        if retention_s < MIN_RETENTION_S:
            raise SecurityConfigError(
                f"audit retention of {retention_s:.0f}s is shorter than the minimum {MIN_RETENTION_S:.0f}s",
                hint="the default keeps six months (183 days); set at least one day",
                field="retention_s",
            )
        with self.engine.begin() as conn:
            covered = conn.execute(select(checkpoints_table.c.size).order_by(checkpoints_table.c.size.desc()))
            top = covered.scalars().first()
            if not top:
                return 0
            result = conn.execute(
                update(entries_table)
                .where(
                    entries_table.c.timestamp < now - retention_s,
                    entries_table.c.idx < top,
                    entries_table.c.body.is_not(None),
                )
                .values(body=None)
            )
        return int(result.rowcount)


# ------------------------------------------------------------------- verification
@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    size: int
    checkpoints_checked: int
    entries_checked: int
    pruned: int
    first_bad_index: int | None = None
    problem: str = ""


def _iter_rows(conn: Connection) -> Iterator[tuple[int, bytes, str | None]]:
    result = conn.execution_options(yield_per=10_000).execute(
        select(entries_table.c.idx, entries_table.c.leaf_hash, entries_table.c.body).order_by(
            entries_table.c.idx
        )
    )
    for idx, h, body in result:
        yield int(idx), bytes(h), body


def verify_log(engine: Engine, verifiers: list[NoteVerifier], origin: str) -> VerifyReport:
    """Re-derive every leaf hash and every signed checkpoint; name the first bad entry.

    Detects an edited body (hash mismatch), a moved row (the body names another index), a removed
    row (a gap or a log shorter than a signed checkpoint), and a rewrite of body *and* hash
    together (the root no longer matches a signed checkpoint; the first index after the last good
    checkpoint is named, since no trusted data localises it further).
    """
    with engine.connect() as conn:
        cps: list[Checkpoint] = []
        for size, root, note in conn.execute(
            select(
                checkpoints_table.c.size, checkpoints_table.c.root_hash, checkpoints_table.c.note
            ).order_by(checkpoints_table.c.size)
        ):
            try:
                cp = open_checkpoint(str(note), verifiers, origin)
            except InvalidProof as exc:
                return VerifyReport(
                    False, 0, len(cps), 0, 0, None, f"checkpoint at size {size}: {exc.message}"
                )
            if cp.size != size or cp.root_hash != bytes(root):
                return VerifyReport(
                    False, 0, len(cps), 0, 0, None, f"checkpoint row {size} disagrees with its signed note"
                )
            cps.append(cp)
        head = int(conn.execute(select(head_table.c.size).where(head_table.c.id == 1)).scalar_one())

        tree = MerkleTree()
        pruned = 0
        cp_i = 0
        last_good = 0

        def check_checkpoints() -> VerifyReport | None:
            nonlocal cp_i, last_good
            while cp_i < len(cps) and cps[cp_i].size == tree.size:
                if tree.root() != cps[cp_i].root_hash:
                    return VerifyReport(
                        False,
                        tree.size,
                        cp_i,
                        tree.size,
                        pruned,
                        last_good,
                        f"entries {last_good}..{tree.size - 1} do not reproduce the root signed at size "
                        f"{tree.size}: an entry and its hash were rewritten, inserted or removed",
                    )
                last_good = tree.size
                cp_i += 1
            return None

        bad = check_checkpoints()
        if bad:
            return bad
        for idx, stored_hash, body in _iter_rows(conn):
            expected = tree.size
            if idx != expected:
                return VerifyReport(
                    False,
                    expected,
                    cp_i,
                    expected,
                    pruned,
                    expected,
                    f"entry {expected} is missing (removed)",
                )
            h = stored_hash
            if body is None:
                pruned += 1
            else:
                data = body.encode()
                try:
                    claimed, _ = AuditEntry.from_canonical(data)
                except (ValueError, KeyError, TypeError, InvalidProof):
                    return VerifyReport(False, idx, cp_i, idx, pruned, idx, f"entry {idx} body is not valid")
                if claimed != idx:
                    return VerifyReport(
                        False,
                        idx,
                        cp_i,
                        idx,
                        pruned,
                        idx,
                        f"entry {idx} holds the body of entry {claimed} (reordered)",
                    )
                h = leaf_hash(data)
                if h != stored_hash:
                    return VerifyReport(
                        False,
                        idx,
                        cp_i,
                        idx,
                        pruned,
                        idx,
                        f"entry {idx} was modified: its body no longer hashes to its leaf",
                    )
            tree.append(h)
            bad = check_checkpoints()
            if bad:
                return bad
        n = tree.size
        if cp_i < len(cps):
            return VerifyReport(
                False,
                n,
                cp_i,
                n,
                pruned,
                n,
                f"entries from {n} are missing: a checkpoint was signed at size {cps[cp_i].size}",
            )
        if head != n:
            return VerifyReport(
                False, n, cp_i, n, pruned, min(head, n), f"head says {head} entries, found {n}"
            )
        return VerifyReport(True, n, cp_i, n, pruned)
