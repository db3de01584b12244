"""Turns the console's session cookie into the bearer credential the API's guard checks, and the
API's JSON errors into HTML (or a redirect to the login page) for console requests."""

from __future__ import annotations

import html
import json
import time
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelplane.api.console.sessions import COOKIE, REFRESH_EARLY_S, Session, SessionStore
from modelplane.security.errors import AuthenticationFailed

PREFIX = "/console"
OPEN = ("/console/login", "/console/static/")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def session_id(headers: dict[str, str]) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed cookie header is no session
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


class ConsoleSessions:
    """Pure ASGI middleware (outermost), so the guard sees the header as if the client had sent it."""

    def __init__(self, app: ASGIApp, sessions: SessionStore) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if scope["method"] == "POST" and not _same_origin(headers):  # login CSRF too, which SameSite misses
            await _send_html(send, 403, _error_html("cross-site request refused",
                                                    "submit forms from the console itself"))
            return
        if path.startswith(OPEN):
            await self.app(scope, receive, send)
            return
        sid = session_id(headers)
        now = time.time()
        session = self.sessions.get(sid, now) if sid else None
        if session is not None and session.expires_at is not None and now >= session.expires_at - REFRESH_EARLY_S:
            session = await self._refreshed(scope, sid or "", session, now)
        errors = _HtmlErrors(send, path, "hx-request" in headers, scope["method"])
        if "authorization" not in headers:
            if session is None:  # not signed in: straight to the login page (no anonymous audit noise)
                await errors.signed_out()
                return
            scope = dict(scope)
            scope["headers"] = [*scope["headers"], (b"authorization", f"Bearer {session.credential}".encode())]
        await self.app(scope, receive, errors)


    async def _refreshed(self, scope: Scope, sid: str, session: Session, now: float) -> Session | None:
        """The session with a fresh access token, or None (signed out) when the login is over."""
        identities = scope["app"].state.security.identities

        def refresh(token: str) -> tuple[str, str, float]:
            pair = identities.refresh(token, now)
            return pair.access_token, pair.refresh_token, pair.expires_at

        try:
            await run_in_threadpool(self.sessions.refresh_if_due, session, refresh, now)
        except AuthenticationFailed:
            self.sessions.drop(sid)
            return None
        return session


def _same_origin(headers: dict[str, str]) -> bool:
    origin = headers.get("origin")
    return origin is None or urlsplit(origin).netloc == headers.get("host", "")


class _HtmlErrors:
    """Buffers an error response with a JSON body and sends it as HTML (401: back to the login page)."""

    def __init__(self, send: Send, path: str, htmx: bool, method: str) -> None:
        self.send, self.path, self.htmx, self.method = send, path, htmx, method
        self.status = 0
        self.body = b""
        self.buffering = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
            self.status = message["status"]
            if self.status >= 400 and headers.get("content-type", "").startswith("application/json"):
                self.buffering = True
                return
        if not self.buffering:
            await self.send(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body"):
            return
        try:
            err: dict[str, Any] = json.loads(self.body or b"{}")
        except ValueError:
            err = {}
        if self.status == 401:
            await self.signed_out()
            return
        await _send_html(self.send, self.status, _error_html(str(err.get("message", "request failed")),
                                                             str(err.get("hint", "")), page=not self.htmx))

    async def signed_out(self) -> None:
        login = f"{PREFIX}/login?next={quote(self.path)}"
        if self.htmx:
            await _send_html(self.send, 401, "", [(b"hx-redirect", login.encode())])
        elif self.method == "GET":
            await _send_html(self.send, 303, "", [(b"location", login.encode())])
        else:
            await _send_html(self.send, 401, _error_html("signed out", "sign in again", page=True))


def _error_html(message: str, hint: str, page: bool = False) -> str:
    body = (f'<div class="error" role="alert"><strong>{html.escape(message)}</strong>'
            + (f"<br><span class=\"hint\">{html.escape(hint)}</span>" if hint else "") + "</div>")
    if not page:
        return body
    return ('<!doctype html><html><head><meta charset="utf-8"><title>modelplane console</title>'
            f'<link rel="stylesheet" href="{PREFIX}/static/console.css"></head><body><main>{body}'
            f'<p><a href="{PREFIX}">back to the console</a></p></main></body></html>')


async def _send_html(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
