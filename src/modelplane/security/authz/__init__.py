"""ABAC with Cedar: a default least-privilege policy set, decisions with reasons, versioned policies."""

from modelplane.security.authz.engine import (
    ACTIONS,
    RESOURCE_TYPES,
    Authorizer,
    Decision,
    authorize,
    validate_policies,
)
from modelplane.security.authz.sql import TABLE_NAMES, PolicyStore, PolicyVersion

__all__ = [
    "ACTIONS",
    "RESOURCE_TYPES",
    "TABLE_NAMES",
    "Authorizer",
    "Decision",
    "PolicyStore",
    "PolicyVersion",
    "authorize",
    "validate_policies",
]
