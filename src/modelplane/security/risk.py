"""User-behaviour analytics: a per-identity baseline and an explainable risk score per request.

Pure and deterministic: the request's own timestamp is the only clock. Each rule adds points with a
reason; the sum (capped at 100) maps to allow / step-up MFA / deny+alert. The score is what the
Cedar context's ``risk_score`` carries, so policies decide with it too.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from modelplane.security.errors import SecurityConfigError


@dataclass(frozen=True)
class RequestEvent:
    identity: str
    time: float  # unix seconds, passed in
    source_ip: str
    device: str | None = None  # registered device fingerprint, if the caller proved one
    bytes_read: int = 0


@dataclass(frozen=True)
class RiskConfig:
    step_up_threshold: int = 50
    deny_threshold: int = 80
    min_events: int = 20  # before this, novelty rules give half points (baseline still learning)
    new_device_points: int = 30
    no_device_points: int = 10
    new_source_points: int = 25
    odd_hour_points: int = 20
    odd_hour_share: float = 0.02  # an hour seen in < 2% of past requests (with its neighbours) is odd
    burst_ratio: float = 5.0  # requests in the last minute vs the usual per active minute
    burst_points: int = 30
    burst_min_requests: int = 20
    volume_ratio: float = 5.0  # bytes in the last hour vs the usual per active hour
    volume_points: int = 50
    volume_min_bytes: int = 10_000_000

    def __post_init__(self) -> None:
        if not 0 < self.step_up_threshold < self.deny_threshold <= 100:
            raise SecurityConfigError(
                "risk thresholds must satisfy 0 < step_up < deny <= 100",
                hint=f"got step_up={self.step_up_threshold}, deny={self.deny_threshold}",
            )


@dataclass(frozen=True)
class Reason:
    code: str
    points: int
    detail: str


@dataclass(frozen=True)
class RiskScore:
    score: int
    action: str  # "allow" | "step_up" | "deny"
    reasons: tuple[Reason, ...]

    @property
    def alert(self) -> bool:
        return self.action == "deny"


def network_of(ip: str) -> str:
    """Group addresses by /24 (IPv4) or /64 (IPv6): a DHCP renewal is not a new location."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError as exc:
        raise SecurityConfigError(f"source address {ip!r} is not an IP address", field="source_ip") from exc
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass
class Baseline:
    """What normal looks like for one identity."""

    events: int = 0
    hours: Counter[int] = field(default_factory=Counter)
    devices: Counter[str] = field(default_factory=Counter)
    networks: Counter[str] = field(default_factory=Counter)
    active_minutes: int = 0
    active_hours: int = 0
    total_bytes: int = 0
    last_minute: int = -1
    last_hour: int = -1
    recent: deque[tuple[float, int]] = field(default_factory=deque)  # (time, bytes) in the last hour

    def usual_per_minute(self) -> float:
        return self.events / self.active_minutes if self.active_minutes else 0.0

    def usual_bytes_per_hour(self) -> float:
        return self.total_bytes / self.active_hours if self.active_hours else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "hours": dict(self.hours),
            "devices": dict(self.devices),
            "networks": dict(self.networks),
            "active_minutes": self.active_minutes,
            "active_hours": self.active_hours,
            "total_bytes": self.total_bytes,
            "last_minute": self.last_minute,
            "last_hour": self.last_hour,
            "recent": [list(x) for x in self.recent],
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Baseline:
        return cls(
            events=int(raw["events"]),
            hours=Counter({int(k): int(v) for k, v in raw["hours"].items()}),
            devices=Counter(raw["devices"]),
            networks=Counter(raw["networks"]),
            active_minutes=int(raw["active_minutes"]),
            active_hours=int(raw["active_hours"]),
            total_bytes=int(raw["total_bytes"]),
            last_minute=int(raw["last_minute"]),
            last_hour=int(raw["last_hour"]),
            recent=deque((float(t), int(b)) for t, b in raw["recent"]),
        )


class RiskScorer:
    """Scores a request against its identity's baseline, then learns from it."""

    def __init__(self, config: RiskConfig | None = None) -> None:
        self.config = config or RiskConfig()
        self.baselines: dict[str, Baseline] = {}

    def assess(self, event: RequestEvent) -> RiskScore:
        """Score, then record the activity; only an allowed request teaches the baseline.

        A risky request (step-up or deny) must not make its own device or network "known"; call
        ``observe`` once the caller has passed the step-up MFA to teach it.
        """
        result = self.score(event)
        if result.action == "allow":
            self.observe(event)
        else:
            self._note_activity(self.baselines.setdefault(event.identity, Baseline()), event)
        return result

    def score(self, event: RequestEvent) -> RiskScore:
        cfg = self.config
        base = self.baselines.get(event.identity, Baseline())
        learning = base.events < cfg.min_events
        scale = 0.5 if learning else 1.0
        reasons: list[Reason] = []

        def add(code: str, points: float, detail: str) -> None:
            reasons.append(Reason(code, round(points), detail))

        if event.device is None:
            add("no-device", cfg.no_device_points * scale, "request not bound to a registered device")
        elif event.device not in base.devices:
            add("new-device", cfg.new_device_points * scale, f"device {event.device[:19]} not seen before")
        net = network_of(event.source_ip)
        if net not in base.networks:
            add("new-source", cfg.new_source_points * scale, f"first request from network {net}")
        hour = int(event.time // 3600) % 24
        if base.events:
            near = sum(base.hours[(hour + d) % 24] for d in (-1, 0, 1))
            if near / base.events < cfg.odd_hour_share:
                add("unusual-hour", cfg.odd_hour_points * scale, f"{hour:02d}:00 UTC is outside usual hours")
        window = [(t, b) for t, b in base.recent if event.time - t < 3600]
        last_minute = 1 + sum(1 for t, _ in window if event.time - t < 60)
        usual = max(base.usual_per_minute(), 1.0)
        if last_minute >= cfg.burst_min_requests and last_minute >= cfg.burst_ratio * usual:
            add("request-burst", cfg.burst_points, f"{last_minute} requests in a minute, usually {usual:.1f}")
        hour_bytes = event.bytes_read + sum(b for _, b in window)
        usual_bytes = base.usual_bytes_per_hour()
        if hour_bytes >= cfg.volume_min_bytes and hour_bytes >= cfg.volume_ratio * max(usual_bytes, 1.0):
            add(
                "data-volume",
                cfg.volume_points,
                f"{hour_bytes} bytes read in an hour, usually {usual_bytes:.0f}",
            )
        score = min(100, sum(r.points for r in reasons))
        if learning:
            reasons.append(Reason("baseline-learning", 0, f"{base.events} of {cfg.min_events} requests seen"))
        if score >= cfg.deny_threshold:
            action = "deny"
        elif score >= cfg.step_up_threshold:
            action = "step_up"
        else:
            action = "allow"
        return RiskScore(score, action, tuple(reasons))

    def observe(self, event: RequestEvent) -> None:
        base = self.baselines.setdefault(event.identity, Baseline())
        base.events += 1
        base.hours[int(event.time // 3600) % 24] += 1
        if event.device is not None:
            base.devices[event.device] += 1
        base.networks[network_of(event.source_ip)] += 1
        minute, hour = int(event.time // 60), int(event.time // 3600)
        if minute != base.last_minute:
            base.active_minutes += 1
            base.last_minute = minute
        if hour != base.last_hour:
            base.active_hours += 1
            base.last_hour = hour
        base.total_bytes += event.bytes_read
        self._note_activity(base, event)

    @staticmethod
    def _note_activity(base: Baseline, event: RequestEvent) -> None:
        """The last hour of requests, whatever their score: rates and volumes are facts, not habits."""
        base.recent.append((event.time, event.bytes_read))
        while base.recent and event.time - base.recent[0][0] >= 3600:
            base.recent.popleft()
