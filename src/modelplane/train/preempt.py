"""Preemption notice: SIGTERM (Kubernetes, Slurm, the local backend) or a spot-interruption notice.

The flag is only a local observation; the checkpoint manager agrees on it across ranks at a step
boundary so that every rank saves the same step and stops together.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

NOTICE_FILE_ENV = "MODELPLANE_PREEMPT_FILE"


class PreemptionWatcher:
    """Set by a signal, by a notice file appearing, or by :meth:`request`.

    ``notice`` is any zero-argument callable returning True when an interruption is announced,
    e.g. a poll of the cloud's metadata endpoint (AWS gives 2 minutes, GCP and Azure 30 s).
    """

    def __init__(
        self,
        *,
        signals: tuple[int, ...] = (signal.SIGTERM,),
        notice_file: str | None = None,
        notice: Callable[[], bool] | None = None,
        install: bool = True,
    ) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.notice_file = notice_file if notice_file is not None else os.environ.get(NOTICE_FILE_ENV)
        self._notice = notice
        self._previous: dict[int, object] = {}
        if install and threading.current_thread() is threading.main_thread():
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.request(f"signal {signal.Signals(signum).name}")

    def request(self, reason: str = "requested") -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    def should_preempt(self) -> bool:
        """This rank's view: a signal arrived or a notice is present."""
        if not self._event.is_set():
            if self.notice_file and os.path.exists(self.notice_file):
                self.request(f"notice file {self.notice_file}")
            elif self._notice is not None and self._notice():
                self.request("interruption notice")
        return self._event.is_set()

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()


class NoPreemption(PreemptionWatcher):
    """The default when nothing should ever interrupt (tests, notebooks)."""

    def __init__(self) -> None:
        super().__init__(install=False, notice_file="")
