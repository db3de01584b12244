"""A controller is one idempotent reconcile step, run again and again by the loop."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

log = logging.getLogger("modelplane.control")


class Controller(ABC):
    name: str = "controller"

    @abstractmethod
    def reconcile(self) -> None:
        """Bring observed state one step closer to desired state. Must be safe to run at any time."""


class ReconcileLoop:
    """Runs controllers in one background thread, one after the other, every ``interval`` seconds.

    A controller that raises is logged and retried on the next round: one bad object never stops the
    control plane.
    """

    def __init__(self, controllers: Sequence[Controller], interval: float = 0.5,
                 on_error: Callable[[Controller, Exception], None] | None = None) -> None:
        self.controllers = list(controllers)
        self.interval = interval
        self.on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def run_once(self) -> None:
        for c in self.controllers:
            try:
                c.reconcile()
            except Exception as exc:
                log.exception("controller %s failed; retrying next round", c.name)
                if self.on_error:
                    self.on_error(c, exc)
        self.rounds += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            self.run_once()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - start)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reconcile-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
