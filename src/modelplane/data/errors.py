"""Data-layer failures, each carrying the fix (see ``core.errors``)."""

from __future__ import annotations

from modelplane.core.errors import ModelplaneError, NotFound


class DataError(ModelplaneError):
    """Base for bad input or unusable state in the data layer."""


class MissingDependency(DataError):
    """An optional package or server binary the data layer needs is not installed."""

    status_code = 500


class ObjectNotFound(NotFound):
    """No committed object at a path (a half-written object counts as absent)."""


class Unrecoverable(DataError):
    """Fewer than k intact fragments remain: the object cannot be rebuilt."""

    status_code = 500


class CorruptRecord(DataError):
    """A shard record failed its CRC check."""

    status_code = 500
