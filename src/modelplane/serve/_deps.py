"""Lazy imports of heavy optional dependencies, with the command that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from modelplane.core.errors import ModelplaneError


class MissingDependency(ModelplaneError):
    status_code = 500


def require(module: str, package: str | None = None, extra: str = "serve") -> ModuleType:
    """Import ``module`` or raise an error naming the pip command that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        pkg = package or module.split(".")[0]
        raise MissingDependency(
            f"{module} is not installed ({exc})",
            hint=f"pip install 'modelplane[{extra}]' (or pip install {pkg})",
        ) from exc
