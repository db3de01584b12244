"""Per-rank liveness and progress signals for the job controller's failure detection.

Two signals, so the controller can tell a dead rank from a hung one: ``beat(step)`` from the
training loop carries progress; a background thread repeats the last beat every interval, so
beats that stop mean the process is gone, while beats whose step stops moving mean a hang.
The sink is a small interface with a no-op default (no platform, no heartbeats).

File format (one JSON object, replaced atomically): ``{"rank", "step", "step_time", "time", "pid", "seq", ...}``
(``step_time``: when ``step`` last advanced).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

HEARTBEAT_FILE_ENV = "MODELPLANE_HEARTBEAT_FILE"  # may contain {rank}
HEARTBEAT_INTERVAL_ENV = "MODELPLANE_HEARTBEAT_INTERVAL_S"


class Heartbeat:
    """No-op heartbeat; subclasses override :meth:`emit`."""

    def __init__(self, rank: int = 0, *, clock: Callable[[], float] = time.time) -> None:
        self.rank = rank
        self.clock = clock
        self.step = 0
        self.step_time = self.clock()  # when ``step`` last advanced: a hang shows as this growing old
        self.seq = 0
        self.info: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def emit(self, record: dict[str, Any]) -> None:
        """Deliver one heartbeat record. The default does nothing."""

    def _record(self) -> dict[str, Any]:
        self.seq += 1
        return {
            "rank": self.rank,
            "step": self.step,
            "step_time": self.step_time,
            "time": self.clock(),
            "pid": os.getpid(),
            "seq": self.seq,
            **self.info,
        }

    def beat(self, step: int, **info: Any) -> None:
        """Progress: the training loop finished ``step``."""
        with self._lock:
            if step != self.step:
                self.step_time = self.clock()
            self.step = step
            self.info.update(info)
            self.emit(self._record())

    def start(self, interval_s: float) -> None:
        """Repeat the last beat every ``interval_s`` from a daemon thread (liveness)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                with self._lock:
                    self.emit(self._record())

        self._thread = threading.Thread(target=loop, name="modelplane-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the beats with a last record saying the process is exiting: what it still does after
        its final beat (leaving the process group, writing results, interpreter teardown) can take
        seconds on a loaded machine, and must not read as a dead rank."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            self.info["exiting"] = True
            self.emit(self._record())


class FileHeartbeat(Heartbeat):
    """Writes the newest record to a file (the local backend's controller reads it)."""

    def __init__(self, path: str, rank: int = 0, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(rank, clock=clock)
        self.path = path.format(rank=rank)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def emit(self, record: dict[str, Any]) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as fh:
            json.dump(record, fh)
        os.replace(tmp, self.path)


class CallbackHeartbeat(Heartbeat):
    """Hands every record to a function (an HTTP post, a Ray actor call, a test's list)."""

    def __init__(
        self,
        callback: Callable[[dict[str, Any]], None],
        rank: int = 0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(rank, clock=clock)
        self.callback = callback

    def emit(self, record: dict[str, Any]) -> None:
        self.callback(record)


def read_heartbeat(path: str) -> dict[str, Any] | None:
    """The newest record in a heartbeat file, or None if none was written yet."""
    try:
        with open(path) as fh:
            data: dict[str, Any] = json.load(fh)
            return data
    except FileNotFoundError:
        return None


def heartbeat_from_env(rank: int, env: dict[str, str]) -> Heartbeat:
    path = env.get(HEARTBEAT_FILE_ENV)
    hb: Heartbeat = FileHeartbeat(path, rank) if path else Heartbeat(rank)
    interval = env.get(HEARTBEAT_INTERVAL_ENV)
    if path and interval:
        hb.start(float(interval))
    return hb
