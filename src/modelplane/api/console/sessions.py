"""Server-side console sessions: the browser holds an opaque id; the credential stays in this process.

A restart signs everyone out, which is the safe direction; a credential never reaches JavaScript.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "modelplane_session"
IDLE_S = 8 * 3600
REFRESH_EARLY_S = 30.0


@dataclass
class Session:
    credential: str  # an API key, or a user's access token
    name: str
    refresh_token: str | None = None
    expires_at: float | None = None  # of the access token; None for an API key
    last_used: float = 0.0


class SessionStore:
    """Session id -> credential, dropped after ``idle_s`` without use."""

    def __init__(self, idle_s: float = IDLE_S) -> None:
        self.idle_s = idle_s
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    def create(self, session: Session, now: float) -> str:
        sid = secrets.token_urlsafe(32)
        session.last_used = now
        with self._lock:
            self._sessions = {k: s for k, s in self._sessions.items() if now - s.last_used < self.idle_s}
            self._sessions[sid] = session
        return sid

    def get(self, sid: str, now: float) -> Session | None:
        with self._lock:
            found = self._sessions.get(sid)
            if found is None or now - found.last_used >= self.idle_s:
                self._sessions.pop(sid, None)
                return None
            found.last_used = now
            return found

    def drop(self, sid: str) -> Session | None:
        with self._lock:
            return self._sessions.pop(sid, None)

    def refresh_if_due(self, session: Session, refresh: Callable[[str], tuple[str, str, float]], now: float) -> None:
        """Swap a user's access token for a fresh one shortly before it expires.

        One refresh at a time: two concurrent requests must never both spend the same refresh
        token, since reusing a spent one revokes the whole login (rotation with reuse detection).
        """
        with self._refresh_lock:
            if session.refresh_token is None or session.expires_at is None:
                return
            if now < session.expires_at - REFRESH_EARLY_S:
                return  # another request refreshed it meanwhile
            session.credential, session.refresh_token, session.expires_at = refresh(session.refresh_token)

