"""Lazy imports of optional packages, failing with an install hint instead of a traceback."""

from __future__ import annotations

import importlib
from types import ModuleType

from modelplane.data.errors import MissingDependency


def require(module: str, *, package: str | None = None, extra: str = "data") -> ModuleType:
    """Import ``module`` or raise MissingDependency naming the pip package and extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg = package or module.split(".")[0]
        raise MissingDependency(
            f"{module} is required for this data feature but could not be imported ({exc}).",
            hint=f"pip install '{pkg}' (or pip install 'modelplane[{extra}]').",
        ) from exc
