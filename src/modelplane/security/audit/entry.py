"""What one audit entry says, and its canonical bytes (the Merkle leaf data)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelplane.security.errors import InvalidProof

OUTCOMES = ("allowed", "denied", "succeeded", "failed", "error")


@dataclass(frozen=True)
class AuditEntry:
    """One security-relevant event: who did what to which resource, when, and how it ended."""

    operator: str
    operation: str
    resource: str
    timestamp: float
    outcome: str
    request_id: str
    details: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise InvalidProof(
                f"audit outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}", field="outcome"
            )
        if not self.operation:
            raise InvalidProof("audit entry needs an operation", field="operation")

    def canonical(self, index: int) -> bytes:
        """Sorted compact JSON with the entry's own index, so a moved row no longer matches its hash."""
        body: dict[str, Any] = {
            "index": index,
            "operator": self.operator,
            "operation": self.operation,
            "resource": self.resource,
            "timestamp": self.timestamp,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "details": dict(self.details),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_canonical(cls, data: bytes) -> tuple[int, AuditEntry]:
        raw = json.loads(data)
        entry = cls(
            operator=raw["operator"],
            operation=raw["operation"],
            resource=raw["resource"],
            timestamp=float(raw["timestamp"]),
            outcome=raw["outcome"],
            request_id=raw["request_id"],
            details=dict(raw.get("details", {})),
        )
        return int(raw["index"]), entry
