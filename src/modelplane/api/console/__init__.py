"""The web console: server-rendered pages (Jinja2 + htmx) on the API server under ``/console``.

Every page is a route with its own rule in ``api.security.RULES`` and runs the API's ``guard``: the
session cookie only stands in for the ``Authorization`` header (``middleware.ConsoleSessions``), so a
user sees in the console exactly what the API would show them. Only the login form and the vendored
static files are open.
"""

from __future__ import annotations

from modelplane.api.console.routes import mount_console

__all__ = ["mount_console"]
