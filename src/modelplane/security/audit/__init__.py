"""Tamper-evident audit log: RFC 9162 Merkle tree, C2SP signed checkpoints, SQL persistence."""

from modelplane.security.audit.entry import AuditEntry
from modelplane.security.audit.merkle import (
    MerkleTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from modelplane.security.audit.note import Checkpoint, NoteSigner, NoteVerifier, open_checkpoint, open_note
from modelplane.security.audit.pseudonym import Pseudonymizer
from modelplane.security.audit.sql import (
    DEFAULT_RETENTION_S,
    TABLE_NAMES,
    AuditLog,
    VerifyReport,
    create_tables,
    make_sqlite_durable,
    verify_log,
)

__all__ = [
    "DEFAULT_RETENTION_S",
    "TABLE_NAMES",
    "AuditEntry",
    "AuditLog",
    "Checkpoint",
    "MerkleTree",
    "NoteSigner",
    "NoteVerifier",
    "Pseudonymizer",
    "VerifyReport",
    "create_tables",
    "leaf_hash",
    "make_sqlite_durable",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
]
