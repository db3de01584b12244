"""Brute-force protection for login and MFA: per account and per source address, time passed in.

Unknown account names are throttled exactly like real ones, so the lockout reveals nothing.
Kept in memory per process (state is small and short-lived); several API replicas each enforce
their own limit, which bounds guessing to replicas x limit per window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from modelplane.security.errors import TooManyAttempts


@dataclass
class _State:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    lockouts: int = 0


class LoginThrottle:
    def __init__(
        self,
        *,
        max_failures: int = 5,
        window_s: float = 900.0,
        lockout_s: float = 60.0,
        max_lockout_s: float = 3600.0,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_lockout_s = max_lockout_s
        self._state: dict[str, _State] = {}

    def check(self, keys: Iterable[str], now: float) -> None:
        wait = max((self._state[k].locked_until - now for k in keys if k in self._state), default=0.0)
        if wait > 0:
            raise TooManyAttempts(
                "too many failed attempts", hint=f"wait {int(wait) + 1} s before trying again"
            )

    def failure(self, keys: Iterable[str], now: float) -> None:
        for key in keys:
            st = self._state.setdefault(key, _State())
            st.failures.append(now)
            while st.failures and now - st.failures[0] > self.window_s:
                st.failures.popleft()
            if len(st.failures) >= self.max_failures:
                # Each lockout doubles, up to the cap: slow for a guesser, short for a typo.
                st.locked_until = now + min(self.max_lockout_s, self.lockout_s * 2**st.lockouts)
                st.lockouts += 1
                st.failures.clear()

    def success(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._state.pop(key, None)
