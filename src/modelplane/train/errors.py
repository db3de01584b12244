"""Errors raised by the training runtime; each names the thing at fault and how to mend it."""

from __future__ import annotations

from modelplane.core.errors import InvalidSpec, ModelplaneError


class CheckpointError(ModelplaneError):
    """A checkpoint could not be written, found or read."""


class NoCheckpoint(CheckpointError):
    """No complete checkpoint exists where one was asked for."""

    status_code = 404


class CorruptCheckpoint(CheckpointError):
    """A checkpoint is incomplete (no manifest) or a file in it does not match its checksum."""

    def __init__(self, message: str, *, path: str, hint: str = "") -> None:
        super().__init__(message, hint=hint, field=path)
        self.path = path


class InvalidParallelConfig(InvalidSpec):
    """A data x tensor x pipeline configuration that cannot run on the given model or devices."""


class MissingDependency(ModelplaneError):
    """An optional dependency is not installed."""

    status_code = 500


def require_torch() -> None:
    """Fail with an install hint instead of an ImportError deep inside the runtime."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:  # pragma: no cover - torch is in the train extra
        raise MissingDependency(
            "PyTorch is needed by modelplane.train (checkpoints, collectives, accumulation).",
            hint="pip install 'modelplane[train]'",
        ) from exc
