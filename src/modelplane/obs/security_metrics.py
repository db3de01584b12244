"""Scrape-time gauges of the security services: how long the audit log is, which policy version is live.

Denied and unauthenticated calls need no gauge of their own: ``modelplane_http_request_duration_seconds``
already counts them by route and status (401, 403).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from modelplane.api.security import ApiSecurity


class SecurityCollector(Collector):
    """Reads the audit log size and the active policy version when Prometheus scrapes."""

    def __init__(self, security: ApiSecurity) -> None:
        self.security = security

    def collect(self) -> Iterator[GaugeMetricFamily]:
        entries = GaugeMetricFamily("modelplane_audit_log_entries", "entries appended to the audit log")
        entries.add_metric([], self.security.log.size)
        yield entries
        version = GaugeMetricFamily("modelplane_policy_version", "version of the active Cedar policy set")
        version.add_metric([], self.security.policy_store.current_version())
        yield version
