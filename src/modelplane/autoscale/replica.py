"""Replica autoscaling policies: Kubernetes HPA, Knative KPA, and ours (queue-aware KPA with a warm floor).

Every policy is an object fed one ``Observation`` per tick with the time in it; it keeps only the
window of past observations it needs and answers a desired replica count. No clock, no I/O.

Anchors (ANCHORS.md "Inference and autoscaling"):
- HPA: desired = ceil(current * metric / target); no action within +-10%; sync every 15 s;
  scale-down takes the highest recommendation of the last 300 s; up at most max(2x, +4) per sync.
- KPA: desired = ceil(concurrency / (target * 0.7)); stable window 60 s, panic window 6 s; panic
  when the panic-window desire >= 2x ready pods, no scale-down while panicking (and for a stable
  window after); up at most 1000x, down at most 2x per tick; scale to zero after 30 s grace.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Observation:
    """What the controller sees at ``now`` (seconds, any epoch)."""

    now: float
    ready: int  # replicas serving
    starting: int  # replicas booting (cold start)
    in_flight: float  # requests being served by replicas
    waiting: float  # requests queued at the gateway (admitted, not yet on a replica)


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    panic: bool = False


class ReplicaPolicy(Protocol):
    name: str

    def decide(self, obs: Observation) -> Decision: ...


@dataclass(frozen=True)
class Bounds:
    min_replicas: int = 0
    max_replicas: int = 100

    def clamp(self, n: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, n))


class _Window:
    """Time-weighted samples within the last ``length`` seconds."""

    def __init__(self, length: float) -> None:
        self.length = length
        self._items: deque[tuple[float, float]] = deque()
        self._sum = 0.0

    def add(self, now: float, value: float) -> None:
        self._items.append((now, value))
        self._sum += value
        while self._items and self._items[0][0] <= now - self.length:
            self._sum -= self._items.popleft()[1]

    def mean(self) -> float:
        return self._sum / len(self._items) if self._items else 0.0

    def max(self) -> float:
        return max((v for _, v in self._items), default=0.0)


class HpaPolicy:
    """Kubernetes HPA on average concurrency per replica (the custom metric users set for inference)."""

    name = "hpa"

    def __init__(self, target_per_replica: float, bounds: Bounds = Bounds(1, 100), *, tolerance: float = 0.1,
                 sync_s: float = 15.0, downscale_stabilization_s: float = 300.0) -> None:
        if target_per_replica <= 0:
            raise ValueError("target_per_replica must be > 0")
        self.target = target_per_replica
        self.bounds = Bounds(max(1, bounds.min_replicas), bounds.max_replicas)  # HPA never scales to zero
        self.tolerance = tolerance
        self.sync_s = sync_s
        self._recs = _Window(downscale_stabilization_s)
        self._last_sync = -math.inf
        self._desired: int | None = None

    def decide(self, obs: Observation) -> Decision:
        current = obs.ready + obs.starting
        if self._desired is None:
            self._desired = self.bounds.clamp(current)
        if obs.now - self._last_sync < self.sync_s:
            return Decision(self._desired, "between syncs")
        self._last_sync = obs.now
        if obs.ready == 0:
            rec = max(current, 1)
        else:
            ratio = (obs.in_flight / obs.ready) / self.target  # HPA averages over ready pods only
            rec = current if abs(ratio - 1.0) <= self.tolerance else math.ceil(current * ratio)
        rec = self.bounds.clamp(rec)
        self._recs.add(obs.now, rec)
        # Down only to the highest recommendation of the stabilization window; up at once.
        stabilized = rec if rec >= current else min(current, int(self._recs.max()))
        up_limit = max(2 * current, current + 4)
        self._desired = self.bounds.clamp(min(stabilized, up_limit))
        return Decision(self._desired, f"ratio recommendation {rec}")


class KpaPolicy:
    """Knative KPA: stable and panic windows over observed concurrency (in flight plus queued)."""

    name = "kpa"

    def __init__(self, target_concurrency: float, bounds: Bounds = Bounds(0, 100), *, utilization: float = 0.7,
                 stable_s: float = 60.0, panic_s: float = 6.0, panic_threshold: float = 2.0,
                 max_up_rate: float = 1000.0, max_down_rate: float = 2.0, scale_to_zero_grace_s: float = 30.0) -> None:
        if target_concurrency <= 0 or not 0 < utilization <= 1:
            raise ValueError("target_concurrency must be > 0 and utilization in (0, 1]")
        self.per_replica = target_concurrency * utilization
        self.bounds = bounds
        self.stable_s = stable_s
        self.panic_threshold = panic_threshold
        self.max_up_rate = max_up_rate
        self.max_down_rate = max_down_rate
        self.grace_s = scale_to_zero_grace_s
        self._stable = _Window(stable_s)
        self._panic = _Window(panic_s)
        self._panic_until = -math.inf
        self._panic_peak = 0
        self._zero_since: float | None = None

    def _demand(self, obs: Observation) -> float:
        return obs.in_flight + obs.waiting

    def decide(self, obs: Observation) -> Decision:
        demand = self._demand(obs)
        self._stable.add(obs.now, demand)
        self._panic.add(obs.now, demand)
        want_stable = math.ceil(self._stable.mean() / self.per_replica)
        want_panic = math.ceil(self._panic.mean() / self.per_replica)
        current = obs.ready + obs.starting
        ready = max(obs.ready, 1)
        if want_panic / ready >= self.panic_threshold and want_panic > obs.ready:
            self._panic_until = obs.now + self.stable_s
        panic = obs.now < self._panic_until
        if panic:
            self._panic_peak = max(self._panic_peak, want_panic, current)
            want = self._panic_peak  # no scale-down while panicking
        else:
            self._panic_peak = 0
            want = want_stable
        want = self._rate_limit(want, current)
        want = self._hold_before_zero(want, obs.now, current)
        return Decision(self.bounds.clamp(want), "panic" if panic else "stable", panic)

    def _rate_limit(self, want: int, current: int) -> int:
        if current == 0:
            return want
        up = math.ceil(current * self.max_up_rate)
        down = math.floor(current / self.max_down_rate)
        return max(min(want, up), down)

    def _hold_before_zero(self, want: int, now: float, current: int) -> int:
        if want > 0:
            self._zero_since = None
            return want
        if self._zero_since is None:
            self._zero_since = now
        if current == 0:
            return 0
        return 0 if now - self._zero_since >= self.grace_s else 1


class QueueAwarePolicy(KpaPolicy):
    """Ours: KPA's windows plus what KPA does not look at.

    - Queue awareness: requests waiting at the gateway count as demand at once (the panic window is
      fed the queue, so a backlog scales up within one tick) and replicas still starting count as
      capacity already coming, so a long cold start does not trigger a second wave of replicas.
    - Cold-start-aware scale-down: with cold starts of tens of seconds, a replica released early is
      paid for again with a queue, so scale-down waits ``downscale_delay_s`` of low demand (Ray Serve's
      idea) and then goes one step of ``max_down_rate``.
    - A warm floor (``bounds.min_replicas``), zero allowed per deployment.
    Drain awareness lives in ``pick_scale_down``: the replicas with the fewest in-flight requests go first.
    """

    name = "ours"

    def __init__(self, target_concurrency: float, bounds: Bounds = Bounds(0, 100), *, downscale_delay_s: float = 300.0,
                 **kpa: float) -> None:
        super().__init__(target_concurrency, bounds, **kpa)
        self._down = _Window(downscale_delay_s)
        self.downscale_delay_s = downscale_delay_s

    def decide(self, obs: Observation) -> Decision:
        base = super().decide(obs)
        current = obs.ready + obs.starting
        queue_need = math.ceil((obs.in_flight + obs.waiting) / self.per_replica)
        want = max(base.desired, queue_need if obs.waiting > 0 else 0)
        self._down.add(obs.now, want)
        if want < current:
            # Go down only to the highest need seen over the delay window.
            want = min(current, max(want, int(self._down.max())))
        return Decision(self.bounds.clamp(want), base.reason, base.panic)


def pick_scale_down(outstanding: dict[str, int], count: int) -> list[str]:
    """Which replicas to remove: the least busy first, so draining finishes soonest (name breaks ties)."""
    return [r for r, _ in sorted(outstanding.items(), key=lambda kv: (kv[1], kv[0]))[: max(0, count)]]


POLICIES = {"hpa": HpaPolicy, "kpa": KpaPolicy, "ours": QueueAwarePolicy}
