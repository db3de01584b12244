"""Security errors: each names what failed and how to fix it, without leaking secrets."""

from __future__ import annotations

from modelplane.core.errors import Forbidden, InvalidSpec, ModelplaneError, Unauthorized

__all__ = [
    "AuthenticationFailed",
    "InvalidPolicy",
    "InvalidProof",
    "MfaRequired",
    "ModelplaneError",
    "SecurityConfigError",
    "TooManyAttempts",
]


class InvalidProof(ModelplaneError):
    """A Merkle proof, checkpoint or signed note did not verify."""

    status_code = 400


class AuthenticationFailed(Unauthorized):
    """Credentials were missing, wrong, expired or revoked (message kept uniform on purpose)."""


class MfaRequired(Forbidden):
    """The request needs a fresh second factor (step-up) before it can proceed."""


class InvalidPolicy(InvalidSpec):
    """A Cedar policy set failed to parse or validate."""


class SecurityConfigError(ModelplaneError):
    """A security setting is out of range (e.g. a retention shorter than allowed)."""


class TooManyAttempts(ModelplaneError):
    """Login or MFA attempts are throttled after repeated failures (same answer for any user name)."""

    status_code = 429
