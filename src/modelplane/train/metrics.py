"""Prometheus metrics of a training process: fault-tolerant accumulation counters, served per rank.

The training loop owns the counters (``AccumulationStats``); this module only reads them when
Prometheus scrapes, so a metrics endpoint never slows a step. ``modelplane.train.init()`` starts the
endpoint when ``MODELPLANE_METRICS_PORT`` is set (each rank on that port + LOCAL_RANK).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from modelplane.train.accumulation import AccumulationStats

METRICS_PORT_ENV = "MODELPLANE_METRICS_PORT"


class AccumulationCollector:
    """Exposes the counters of one or more accumulators, labelled with the rank."""

    def __init__(self, rank: int) -> None:
        self.rank = str(rank)
        self._stats: list[AccumulationStats] = []

    def watch(self, stats: AccumulationStats) -> None:
        self._stats.append(stats)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        steps = CounterMetricFamily("modelplane_train_steps", "optimizer steps taken", labels=["rank"])
        skipped = CounterMetricFamily("modelplane_train_skipped_steps",
                                      "steps skipped because every micro-batch failed", labels=["rank"])
        micro = CounterMetricFamily("modelplane_train_microbatches", "micro-batches by outcome",
                                    labels=["rank", "outcome"])
        reasons = CounterMetricFamily("modelplane_train_microbatch_failures",
                                      "dropped micro-batches by reason", labels=["rank", "reason"])
        totals: dict[str, int] = {}
        for s in self._stats:
            for key, value in (("steps", s.steps), ("skipped", s.skipped_steps), ("ok", s.ok),
                               ("dropped", s.dropped), ("retried", s.retried)):
                totals[key] = totals.get(key, 0) + value
            for reason, n in s.reasons.items():
                totals["reason:" + reason] = totals.get("reason:" + reason, 0) + n
        steps.add_metric([self.rank], totals.get("steps", 0))
        skipped.add_metric([self.rank], totals.get("skipped", 0))
        for outcome in ("ok", "dropped", "retried"):
            micro.add_metric([self.rank, outcome], totals.get(outcome, 0))
        for key, n in sorted(totals.items()):
            if key.startswith("reason:"):
                reasons.add_metric([self.rank, key.split(":", 1)[1]], n)
        yield from (steps, skipped, micro, reasons)


def serve_metrics(collector: AccumulationCollector, port: int, addr: str = "0.0.0.0") -> Any:
    """Start the HTTP endpoint in a daemon thread; returns the server (``.shutdown()`` stops it)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server
