"""Errors that carry a fix: every user-facing failure names what is wrong and how to mend it."""

from __future__ import annotations


class ModelplaneError(Exception):
    """Base error. ``field`` names the offending input, ``hint`` says how to fix it."""

    status_code = 400

    def __init__(self, message: str, *, hint: str = "", field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.field = field

    def to_dict(self) -> dict[str, str]:
        out = {"error": type(self).__name__, "message": self.message}
        if self.field:
            out["field"] = self.field
        if self.hint:
            out["hint"] = self.hint
        return out

    def __str__(self) -> str:
        parts = [self.message]
        if self.hint:
            parts.append(f"Hint: {self.hint}")
        return " ".join(parts)


class InvalidSpec(ModelplaneError):
    """A manifest or a field in it is malformed."""

    status_code = 422


class NotFound(ModelplaneError):
    status_code = 404


class Conflict(ModelplaneError):
    """A duplicate name, or a write based on a stale resource version."""

    status_code = 409


class InvalidTransition(ModelplaneError):
    """The job state machine refused a transition."""

    status_code = 409


class Unauthorized(ModelplaneError):
    status_code = 401


class Forbidden(ModelplaneError):
    status_code = 403
