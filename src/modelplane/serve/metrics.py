"""Prometheus metrics with the names Triton and vLLM users already know.

Each replica or gateway owns a ``CollectorRegistry`` so several can live in one process (tests,
the all-in-one platform) without name clashes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_US = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000)


class ReplicaMetrics:
    """Triton-style: ``nv_inference_count / nv_inference_exec_count`` is the mean batch size."""

    def __init__(self, model: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.model = model
        labels = ["model"]
        self.request_success = Counter(
            "nv_inference_request_success", "Successful inference requests", labels, registry=self.registry
        )
        self.request_failure = Counter(
            "nv_inference_request_failure", "Failed inference requests", labels, registry=self.registry
        )
        self.inference_count = Counter(
            "nv_inference_count", "Rows (inferences) computed", labels, registry=self.registry
        )
        self.exec_count = Counter(
            "nv_inference_exec_count", "Batches executed", labels, registry=self.registry
        )
        self.request_duration_us = Histogram(
            "nv_inference_request_duration_us", "End-to-end request time in the replica (us)",
            labels, buckets=_LATENCY_US, registry=self.registry,
        )
        self.queue_duration_us = Histogram(
            "nv_inference_queue_duration_us", "Time a request waited for its batch (us)",
            labels, buckets=_LATENCY_US, registry=self.registry,
        )
        self.pending = Gauge(
            "nv_inference_pending_request_count", "Requests queued or running", labels, registry=self.registry
        )

    def on_batch(self, requests: int, rows: int, queue_s: list[float], exec_s: float) -> None:
        self.inference_count.labels(self.model).inc(rows)
        self.exec_count.labels(self.model).inc()
        for q in queue_s:
            self.queue_duration_us.labels(self.model).observe(q * 1e6)


class GatewayMetrics:
    """vLLM-style request metrics per deployment plus guard decision counters."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.e2e_latency = Histogram(
            "modelplane_gateway_e2e_request_latency_seconds", "Gateway end-to-end request latency",
            ["deployment"], buckets=[b / 1e6 for b in _LATENCY_US], registry=self.registry,
        )
        self.queue_time = Histogram(
            "modelplane_gateway_request_queue_time_seconds", "Time waiting for admission",
            ["deployment"], buckets=[b / 1e6 for b in _LATENCY_US], registry=self.registry,
        )
        self.running = Gauge(
            "modelplane_gateway_num_requests_running", "Requests sent to a replica", ["deployment"],
            registry=self.registry,
        )
        self.waiting = Gauge(
            "modelplane_gateway_num_requests_waiting", "Requests waiting for admission", ["deployment"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "modelplane_gateway_requests_rejected", "Requests refused with 429 (queue full)", ["deployment"],
            registry=self.registry,
        )
        self.retries = Counter(
            "modelplane_gateway_retries", "Requests retried on another replica", ["deployment"],
            registry=self.registry,
        )
        self.responses = Counter(
            "modelplane_gateway_responses", "Responses by status code", ["deployment", "code"],
            registry=self.registry,
        )
        self.guard_decisions = Counter(
            "modelplane_guard_decisions", "Guard decisions", ["deployment", "guard", "stage", "action"],
            registry=self.registry,
        )
