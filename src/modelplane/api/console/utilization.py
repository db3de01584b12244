"""Allocated and idle devices over the last hours, kept in the API process's memory.

A bounded ring buffer, sampled on a periodic tick of the API server (and by a page view when the last
sample is older than the tick): the console's picture of the recent past, without a table in the
database. It starts empty when the server starts; Prometheus (``modelplane_accelerators``) keeps the
long history.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from modelplane.api.console.pool import ModelDevices, pool_by_model
from modelplane.core.job import ACTIVE
from modelplane.store import Store

INTERVAL_S = 30.0
CAPACITY = 12 * 3600 // int(INTERVAL_S)  # 12 hours of samples


@dataclass(frozen=True)
class Sample:
    t: float
    total: dict[str, int]  # devices per accelerator model
    allocated: dict[str, float]

    def idle(self, model: str | None = None) -> float:
        return max(self.devices(model) - self.used(model), 0.0)

    def devices(self, model: str | None = None) -> float:
        return float(sum(self.total.values()) if model is None else self.total.get(model, 0))

    def used(self, model: str | None = None) -> float:
        return sum(self.allocated.values()) if model is None else self.allocated.get(model, 0.0)


def _sample(t: float, models: Iterable[ModelDevices]) -> Sample:
    models = list(models)
    return Sample(t, {m.model: m.total for m in models}, {m.model: m.allocated for m in models})


def measure(store: Store, now: float) -> Sample:
    """The pool now: devices and allocated devices per accelerator model."""
    nodes = {n.name: n.to_node() for n in store.list_nodes()}
    active, _ = store.list_jobs(states=sorted(ACTIVE), limit=100_000)
    return _sample(now, pool_by_model(nodes, [j.placement for j in active if j.placement]))


class UtilizationHistory:
    def __init__(self, capacity: int = CAPACITY, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._samples: deque[Sample] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, t: float, models: Iterable[ModelDevices]) -> Sample:
        return self._keep(_sample(t, models))

    def _keep(self, sample: Sample) -> Sample:
        with self._lock:
            if self._samples and sample.t < self._samples[-1].t:  # a clock step back: keep the series ordered
                self._samples.clear()
            self._samples.append(sample)
        return sample

    def sample_store(self, store: Store, now: float) -> Sample:
        return self._keep(measure(store, now))

    def view(self, store: Store, now: float, since: float) -> list[Sample]:
        """The kept samples since ``since``, ending with the pool as it is now; that last one is kept
        only when a tick has passed since the last kept sample, so reloading a page cannot flood the
        buffer, yet the chart always ends where the table above it is."""
        current = measure(store, now)
        with self._lock:
            last = self._samples[-1].t if self._samples else None
        if last is None or now - last >= self.interval_s:
            self._keep(current)
            return self.samples(since)
        return [*self.samples(since), current]

    def samples(self, since: float = float("-inf")) -> list[Sample]:
        with self._lock:
            return [s for s in self._samples if s.t >= since]

    @property
    def capacity(self) -> int:
        return self._samples.maxlen or 0

    # ---- the periodic tick -------------------------------------------------------------------------

    def start(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        if self._thread is not None:
            return
        self._stop.clear()

        def tick() -> None:
            while not self._stop.is_set():
                with contextlib.suppress(Exception):  # a busy or briefly unreachable database: next tick
                    self.sample_store(store, clock())
                self._stop.wait(self.interval_s)

        self._thread = threading.Thread(target=tick, name="console-utilization", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
