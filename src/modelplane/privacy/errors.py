"""Privacy-runtime errors: each names the party or input at fault and how to fix it."""

from __future__ import annotations

from modelplane.core.errors import ModelplaneError


class PrivacyError(ModelplaneError):
    """Base class for failures of the privacy runtime."""


class MissingDependency(PrivacyError):
    """An optional package the feature needs is not installed."""


class MalformedMessage(PrivacyError):
    """A peer sent a message of the wrong kind, shape or range; ``field`` names the peer."""


class CertificateError(PrivacyError):
    """TLS handshake failed: the peer's certificate is not signed by our CA or the key does not match."""


class KeyMismatch(PrivacyError):
    """Parties disagree on a public key, or a private key does not match its certificate."""


class BudgetExhausted(PrivacyError):
    """The differential-privacy budget is spent; training must stop."""


class AttestationError(PrivacyError):
    """A TEE quote did not verify against its collateral."""


def require(module: str, extra: str = "privacy") -> object:
    """Import ``module`` or raise an error with the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"the Python package {module!r} is required here but is not installed",
            hint=f"pip install 'modelplane[{extra}]'",
        ) from exc
