"""Serving errors: each carries the HTTP status the replica or gateway answers with."""

from __future__ import annotations

from modelplane.core.errors import ModelplaneError, NotFound


class ServeError(ModelplaneError):
    """Base of serving errors."""


class BadInput(ServeError):
    """A request's JSON or tensor does not match what the model expects."""

    status_code = 400


class ModelValidationFailed(ServeError):
    """A model file failed onnx.checker or the numerical comparison at registration."""

    status_code = 422


class ModelNotFound(NotFound):
    """No such model or version in the registry."""


class Overloaded(ServeError):
    """The bounded queue is full; the client should retry after ``retry_after_s``."""

    status_code = 429

    def __init__(self, message: str, *, retry_after_s: float, hint: str = "", field: str = "") -> None:
        super().__init__(message, hint=hint, field=field)
        self.retry_after_s = retry_after_s


class NoReplicaAvailable(ServeError):
    """Every replica failed or none is ready."""

    status_code = 503


class Blocked(ServeError):
    """A guard refused the request or the response."""

    status_code = 403
