"""Discrete-event replay of a request trace through a replica policy and a node-group autoscaler.

Pure: the trace, cold starts and a seed come in; the summary comes out. Model of the world:
- a replica occupies ``gpus_per_replica`` GPUs on one node and serves ``slots`` requests at once;
  it serves after a cold start drawn from ``cold_starts_s`` (model load);
- a new node serves after its group's provisioning delay; spot nodes get an interruption notice
  at exponential times (``spot_interruptions_per_hour``) and die ``notice_s`` later, re-queueing
  what was running on them (the gateway retries it);
- the gateway queue is FIFO and sends each request to the replica with the most free slots;
- the replica policy is asked every ``tick_s``; scale-down removes the least busy replicas and
  lets busy ones drain.
A request meets the SLO when it waits at most ``slo_wait_s`` before a replica starts it.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from modelplane.autoscale.nodegroup import (
    Drain,
    NodeGroup,
    NodeGroupAutoscaler,
    NodePhase,
    NodeView,
    Provision,
    Terminate,
)
from modelplane.autoscale.replica import Decision, Observation, pick_scale_down


class _Policy(Protocol):
    name: str

    def decide(self, obs: Observation) -> Decision: ...


class StaticPolicy:
    """The baseline: a fixed replica count (peak provisioning)."""

    name = "static"

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas

    def decide(self, obs: Observation) -> Decision:
        return Decision(self.replicas, "static")


@dataclass(frozen=True)
class ReplayConfig:
    slots: int = 1
    gpus_per_replica: int = 1
    tick_s: float = 2.0
    slo_wait_s: float = 10.0
    spot_interruptions_per_hour: float = 0.0
    initial_replicas: int = 0  # ready (warm, on ready nodes) at t=0
    seed: int = 0


@dataclass
class _Node:
    id: str
    group: NodeGroup
    phase: NodePhase
    born: float
    replicas: set[int] = field(default_factory=set)
    interruption_at: float | None = None


@dataclass
class _Replica:
    id: int
    state: str  # pending (no node), starting, ready, draining
    born: float
    node: str | None = None
    running: dict[int, float] = field(default_factory=dict)  # request index -> service seconds


@dataclass(frozen=True)
class ReplayResult:
    policy: str
    requests: int
    slo_attainment: float
    wait_p50_s: float
    wait_p99_s: float
    unfinished: int
    requeued_by_spot_kills: int
    replica_hours: float
    gpu_hours: float
    cost: float
    spot_gpu_hours: float
    peak_replicas: int

    def as_dict(self) -> dict[str, float | int | str]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def replay(
    arrivals: list[float],
    service_s: list[float],
    policy: _Policy,
    node_autoscaler: NodeGroupAutoscaler,
    cold_starts_s: list[float],
    config: ReplayConfig = ReplayConfig(),
) -> ReplayResult:
    """Replay requests (arrival times in seconds, sorted, with service times) and summarise."""
    if len(arrivals) != len(service_s):
        raise ValueError("arrivals and service_s must have the same length")
    if not cold_starts_s:
        raise ValueError("cold_starts_s must hold at least one sample")
    sim = _Sim(arrivals, service_s, policy, node_autoscaler, cold_starts_s, config)
    return sim.run()


class _Sim:
    def __init__(self, arrivals: list[float], service_s: list[float], policy: _Policy,
                 nodes: NodeGroupAutoscaler, cold: list[float], cfg: ReplayConfig) -> None:
        self.arr, self.svc, self.policy, self.nas, self.cold, self.cfg = arrivals, service_s, policy, nodes, cold, cfg
        self.rng = random.Random(cfg.seed)
        self.events: list[tuple[float, int, str, int | str]] = []
        self.seq = itertools.count()
        self.queue: deque[int] = deque()
        self.start_at: list[float] = [math.nan] * len(arrivals)
        self.replicas: dict[int, _Replica] = {}
        self.nodes: dict[str, _Node] = {}
        self.rid = itertools.count()
        self.nid = itertools.count()
        self.replica_s = 0.0
        self.node_gpu_s: dict[str, float] = {g.name: 0.0 for g in nodes.groups}
        self.requeued = 0
        self.peak = 0
        self.t0 = arrivals[0] if arrivals else 0.0

    def push(self, t: float, kind: str, ref: int | str) -> None:
        heapq.heappush(self.events, (t, next(self.seq), kind, ref))

    # --- nodes ---
    def add_node(self, group: NodeGroup, now: float, ready: bool) -> _Node:
        n = _Node(f"{group.name}-{next(self.nid)}", group, NodePhase.READY if ready else NodePhase.PROVISIONING, now)
        self.nodes[n.id] = n
        if ready:
            self.node_ready(n, now)
        else:
            self.push(now + group.provisioning_delay_s, "node_ready", n.id)
        return n

    def node_ready(self, n: _Node, now: float) -> None:
        n.phase = NodePhase.READY
        if n.group.spot and self.cfg.spot_interruptions_per_hour > 0:
            t = now + self.rng.expovariate(self.cfg.spot_interruptions_per_hour / 3600.0)
            self.push(t, "notice", n.id)
        self.place_pending(now)

    def free_gpus(self, n: _Node) -> int:
        return n.group.gpus_per_node - len(n.replicas) * self.cfg.gpus_per_replica

    def remove_node(self, n: _Node, now: float) -> None:
        self.node_gpu_s[n.group.name] += (now - n.born) * n.group.gpus_per_node
        del self.nodes[n.id]

    # --- replicas ---
    def place_pending(self, now: float) -> None:
        for r in self.replicas.values():
            if r.state != "pending":
                continue
            node = next((n for n in self.nodes.values() if n.phase is NodePhase.READY
                         and n.interruption_at is None and self.free_gpus(n) >= self.cfg.gpus_per_replica), None)
            if node is None:
                return
            node.replicas.add(r.id)
            r.node, r.state = node.id, "starting"
            self.push(now + self.rng.choice(self.cold), "replica_ready", r.id)

    def remove_replica(self, r: _Replica, now: float) -> None:
        self.replica_s += now - r.born
        if r.node is not None and r.node in self.nodes:
            self.nodes[r.node].replicas.discard(r.id)
        del self.replicas[r.id]

    def dispatch(self, now: float) -> None:
        while self.queue:
            ready = [r for r in self.replicas.values() if r.state == "ready" and len(r.running) < self.cfg.slots]
            if not ready:
                return
            r = min(ready, key=lambda r: (len(r.running), r.id))
            i = self.queue.popleft()
            self.start_at[i] = now
            r.running[i] = now
            self.push(now + self.svc[i], "done", r.id * 10_000_000 + i)

    # --- main loop ---
    def run(self) -> ReplayResult:
        cfg = self.cfg
        for i, t in enumerate(self.arr):
            self.push(t, "arrive", i)
        if cfg.initial_replicas:
            cheapest = min(self.nas.groups, key=lambda g: (g.spot, g.price_per_hour))
            per_node = cheapest.gpus_per_node // cfg.gpus_per_replica
            for _ in range(math.ceil(cfg.initial_replicas / per_node)):
                self.add_node(cheapest, self.t0, ready=True)
            for _ in range(cfg.initial_replicas):
                r = _Replica(next(self.rid), "pending", self.t0)
                self.replicas[r.id] = r
            self.place_pending(self.t0)
            for r in self.replicas.values():
                r.state = "ready"
            self.events = [e for e in self.events if e[2] != "replica_ready"]
            heapq.heapify(self.events)
        end = (self.arr[-1] if self.arr else 0.0) + max(self.svc, default=0.0) + 600.0
        t = self.t0
        quiet_since = t
        while t < end:
            t_next = t + cfg.tick_s
            while self.events and self.events[0][0] < t_next:
                et, _, kind, ref = heapq.heappop(self.events)
                self.handle(et, kind, ref)
            self.tick(t_next)
            t = t_next
            if self.queue or any(r.running for r in self.replicas.values()):
                quiet_since = t
            t = self.maybe_skip(t, quiet_since)
        for r in list(self.replicas.values()):
            self.remove_replica(r, end)
        for n in list(self.nodes.values()):
            self.remove_node(n, end)
        return self.summary()

    def maybe_skip(self, t: float, quiet_since: float) -> float:
        """Jump over idle stretches once every window has emptied and nothing is changing."""
        if t - quiet_since < 1200 or not self.events:
            return t
        if any(r.state != "ready" for r in self.replicas.values()):
            return t
        if any(n.phase is not NodePhase.READY or not n.replicas for n in self.nodes.values()):
            return t
        nxt = self.events[0][0]
        if nxt - t > 10 * self.cfg.tick_s:
            return t + math.floor((nxt - t) / self.cfg.tick_s - 1) * self.cfg.tick_s
        return t

    def handle(self, now: float, kind: str, ref: int | str) -> None:
        if kind == "arrive":
            assert isinstance(ref, int)
            self.queue.append(ref)
            self.dispatch(now)
        elif kind == "done":
            assert isinstance(ref, int)
            rid, i = divmod(ref, 10_000_000)
            r = self.replicas.get(rid)
            if r is None or i not in r.running:
                return  # the replica died with its node; the request was re-queued
            del r.running[i]
            if r.state == "draining" and not r.running:
                self.remove_replica(r, now)
            self.dispatch(now)
        elif kind == "replica_ready":
            assert isinstance(ref, int)
            r = self.replicas.get(ref)
            if r is not None and r.state == "starting":
                r.state = "ready"
                self.dispatch(now)
        elif kind == "node_ready":
            n = self.nodes.get(str(ref))
            if n is not None and n.phase is NodePhase.PROVISIONING:
                self.node_ready(n, now)
        elif kind == "notice":
            n = self.nodes.get(str(ref))
            if n is not None:
                n.interruption_at = now + n.group.notice_s
                self.push(n.interruption_at, "kill", n.id)
        elif kind == "kill":
            n = self.nodes.get(str(ref))
            if n is not None:
                for rid in list(n.replicas):
                    r = self.replicas[rid]
                    for i in sorted(r.running, reverse=True):
                        self.queue.appendleft(i)
                        self.requeued += 1
                    r.running.clear()
                    self.remove_replica(r, now)
                self.remove_node(n, now)
                self.dispatch(now)

    def tick(self, now: float) -> None:
        reps = list(self.replicas.values())
        active = [r for r in reps if r.state in ("pending", "starting", "ready")]
        ready = [r for r in active if r.state == "ready"]
        obs = Observation(now, len(ready), len(active) - len(ready),
                          float(sum(len(r.running) for r in reps)), float(len(self.queue)))
        desired = self.policy.decide(obs).desired
        if desired > len(active):
            for _ in range(desired - len(active)):
                r = _Replica(next(self.rid), "pending", now)
                self.replicas[r.id] = r
        elif desired < len(active):
            self.scale_down(active, len(active) - desired, now)
        # Replicas on nodes under an interruption notice move now: drain them, replace them.
        for n in self.nodes.values():
            if n.interruption_at is not None:
                for rid in list(n.replicas):
                    r = self.replicas[rid]
                    if r.state in ("starting", "ready"):
                        self.retire(r, now)
        self.apply_nodes(now)
        self.place_pending(now)
        self.peak = max(self.peak, sum(1 for r in self.replicas.values() if r.state != "draining"))

    def scale_down(self, active: list[_Replica], count: int, now: float) -> None:
        order = [r for r in active if r.state == "pending"] + [r for r in active if r.state == "starting"]
        ready = {str(r.id): len(r.running) for r in active if r.state == "ready"}
        order += [self.replicas[int(k)] for k in pick_scale_down(ready, len(ready))]
        for r in order[:count]:
            self.retire(r, now)

    def retire(self, r: _Replica, now: float) -> None:
        if r.running:
            r.state = "draining"
        else:
            self.remove_replica(r, now)

    def apply_nodes(self, now: float) -> None:
        views = [NodeView(n.id, n.group.name, n.phase, len(n.replicas) * self.cfg.gpus_per_replica, n.interruption_at)
                 for n in self.nodes.values()]
        needed = sum(1 for r in self.replicas.values()) * self.cfg.gpus_per_replica
        by_name = {g.name: g for g in self.nas.groups}
        for a in self.nas.plan(now, views, needed):
            if isinstance(a, Provision):
                for _ in range(a.count):
                    self.add_node(by_name[a.group], now, ready=False)
            elif isinstance(a, Drain):
                if a.node_id in self.nodes:
                    self.nodes[a.node_id].phase = NodePhase.DRAINING
            elif isinstance(a, Terminate):
                n = self.nodes.get(a.node_id)
                if n is not None and not n.replicas:
                    self.remove_node(n, now)

    def summary(self) -> ReplayResult:
        waits = sorted(s - a for s, a in zip(self.start_at, self.arr, strict=True) if not math.isnan(s))
        unfinished = len(self.arr) - len(waits)
        ok = sum(1 for w in waits if w <= self.cfg.slo_wait_s)
        groups = {g.name: g for g in self.nas.groups}
        gpu_h = sum(self.node_gpu_s.values()) / 3600.0
        cost = sum(s / 3600.0 / groups[k].gpus_per_node * groups[k].price_per_hour for k, s in self.node_gpu_s.items())
        spot_h = sum(s for k, s in self.node_gpu_s.items() if groups[k].spot) / 3600.0

        def pct(p: float) -> float:
            return waits[min(len(waits) - 1, int(p * len(waits)))] if waits else math.nan

        return ReplayResult(self.policy.name, len(self.arr), ok / len(self.arr) if self.arr else 1.0,
                            pct(0.5), pct(0.99), unfinished, self.requeued, self.replica_s / 3600.0,
                            gpu_h, cost, spot_h, self.peak)
