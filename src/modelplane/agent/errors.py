"""Errors of the node agent: each names what is wrong and how to fix it."""

from __future__ import annotations

from modelplane.core.errors import ModelplaneError


class AgentError(ModelplaneError):
    """The agent cannot do its job (bad option, missing binary, server that would not start)."""
