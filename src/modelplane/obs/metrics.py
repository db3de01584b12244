"""Prometheus metrics. Counters and histograms are updated where things happen; gauges of the pool
and the queues are read from the store at scrape time, so every process reports the same truth.

Names follow Prometheus conventions (``_total``, ``_seconds``), prefixed ``modelplane_``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from modelplane.store import Store

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_REQUESTS = Histogram(
    "modelplane_http_request_duration_seconds", "API request latency", ["method", "route", "status"],
    registry=REGISTRY, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SCHEDULER_ROUND = Histogram(
    "modelplane_scheduler_round_seconds", "time of one scheduling round (snapshot, policy, writes)",
    registry=REGISTRY, buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10),
)
PLACEMENT_LATENCY = Histogram(
    "modelplane_placement_latency_seconds", "time from submission to placement of a job", ["queue"],
    registry=REGISTRY, buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400),
)
PLACEMENTS = Counter("modelplane_placements_total", "jobs placed by the scheduler", ["queue"], registry=REGISTRY)
PREEMPTIONS = Counter("modelplane_preemptions_total", "jobs preempted", ["queue"], registry=REGISTRY)
TRANSITIONS = Counter("modelplane_job_transitions_total", "job state transitions", ["to_state", "reason"],
                      registry=REGISTRY)
MIGRATIONS = Counter("modelplane_migrations_total", "jobs moved off a lost or drained node", registry=REGISTRY)
LAUNCH_SECONDS = Histogram("modelplane_backend_launch_seconds", "time for a backend to launch a job's tasks",
                           ["backend"], registry=REGISTRY, buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120))
SCALING_DECISIONS = Counter("modelplane_deployment_scaling_decisions_total", "replica count changes decided by "
                            "the autoscaler", ["deployment", "direction"], registry=REGISTRY)
GATEWAY_REQUESTS = Counter("modelplane_gateway_requests_total", "inference requests through the API gateway",
                           ["deployment", "code"], registry=REGISTRY)

NODE_DRAINS = Counter("modelplane_node_drains_total", "nodes put into Draining, by reason (Drained by an "
                      "operator, SpotInterruption from a node agent)", ["reason"], registry=REGISTRY)
SPOT_NOTICES = Counter("modelplane_spot_interruption_notices_total", "interruption notices a node agent read "
                       "from its cloud's metadata service", ["provider"], registry=REGISTRY)
PEER_MEMORY_RESTARTS = Counter("modelplane_peer_memory_restarts_total", "peer-memory redis-server processes a "
                               "node agent found dead (or silent) and started again", registry=REGISTRY)



WORKLOAD_KINDS = ("TrainingJob", "InferenceDeployment", "Pipeline", "FederatedJob")


class StoreCollector(Collector):
    """Gauges computed from the store when Prometheus scrapes."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from modelplane.core.accounting import queue_usage
        from modelplane.core.job import ACTIVE, TERMINAL, JobState

        jobs = GaugeMetricFamily("modelplane_jobs", "jobs by queue and state (unfinished states)",
                                 labels=["queue", "state"])
        counts: dict[tuple[str, str], int] = {}
        live = [s for s in JobState if s not in TERMINAL]
        all_live, _ = self.store.list_jobs(states=live, limit=1_000_000)
        queues = {q.name: q.spec for q in self.store.list_queues()}
        for q in queues:  # known label values start at zero (Prometheus practice), so rate() has a series
            PLACEMENTS.labels(q)
            PREEMPTIONS.labels(q)
        for q in queues:
            for st in live:
                counts[(q, st.value)] = 0
        for j in all_live:
            counts[(j.queue, j.state.value)] = counts.get((j.queue, j.state.value), 0) + 1
        for (q, state), count in sorted(counts.items()):
            jobs.add_metric([q, state], count)
        yield jobs

        # By kind, so training, inference and pipeline dashboards can each count their own workloads.
        workloads = GaugeMetricFamily("modelplane_workloads", "unfinished jobs by kind and state",
                                      labels=["kind", "state"])
        by_kind: dict[tuple[str, str], int] = {(k, st.value): 0 for k in WORKLOAD_KINDS for st in live}
        for j in all_live:
            by_kind[(j.kind, j.state.value)] = by_kind.get((j.kind, j.state.value), 0) + 1
        for (kind, state), count in sorted(by_kind.items()):
            workloads.add_metric([kind, state], count)
        yield workloads

        records = self.store.list_nodes()
        nodes = {n.name: n.to_node() for n in records}
        node_state = GaugeMetricFamily("modelplane_nodes", "nodes by state", labels=["state"])
        by_state: dict[str, int] = {}
        for r in records:
            by_state[r.state.value] = by_state.get(r.state.value, 0) + 1
        for state, count in sorted(by_state.items()):
            node_state.add_metric([state], count)
        yield node_state

        price = GaugeMetricFamily("modelplane_node_price_per_hour", "a node's price per hour (spot or on-demand)",
                                  labels=["node", "model", "spot"])
        for name, n in sorted(nodes.items()):
            price.add_metric([name, n.gpu_model or "none", "true" if n.spot else "false"], n.price_per_hour)
        yield price

        active = [j for j in all_live if j.state in ACTIVE and j.placement]
        capacity: dict[str, float] = {}
        for n in nodes.values():
            if n.gpu_model and n.gpu_count:
                capacity[n.gpu_model] = capacity.get(n.gpu_model, 0) + n.gpu_count
        allocated: dict[str, float] = {m: 0.0 for m in capacity}
        for j in active:
            assert j.placement is not None
            for a in j.placement.assignments:
                node = nodes.get(a.node)
                if node and node.gpu_model and a.devices:
                    allocated[node.gpu_model] = allocated.get(node.gpu_model, 0) + a.gpu_milli * len(a.devices) / 1000
        dev = GaugeMetricFamily("modelplane_accelerators", "accelerators by model and status (allocated, idle)",
                                labels=["model", "status"])
        for model, cap in sorted(capacity.items()):
            dev.add_metric([model, "allocated"], allocated.get(model, 0))
            dev.add_metric([model, "idle"], cap - allocated.get(model, 0))
        yield dev

        usage = queue_usage(queues, [(j.queue, j.placement) for j in active if j.placement], nodes)
        fams = {k: GaugeMetricFamily(f"modelplane_queue_{k}_accelerators", f"queue {k} per accelerator model",
                                     labels=["queue", "model"]) for k in ("quota", "used", "borrowed", "lent")}
        for name, u in sorted(usage.items()):
            # Zeros too: a queue that uses nothing still has a series, so dashboards show 0, not "no data".
            models = sorted(set(capacity) | set(u.quota) | set(u.used) | set(u.borrowed) | set(u.lent))
            for kind, values in (("quota", u.quota), ("used", u.used), ("borrowed", u.borrowed), ("lent", u.lent)):
                for model in models:
                    fams[kind].add_metric([name, model], values.get(model, 0) / 1000)
        yield from fams.values()

        # Inference deployments, from the controller's status: the same truth in every process.
        replicas = GaugeMetricFamily("modelplane_deployment_replicas", "replicas of an inference deployment: "
                                     "desired (the autoscaler's answer) and ready (serving)",
                                     labels=["deployment", "kind"])
        in_flight = GaugeMetricFamily("modelplane_deployment_requests", "requests at a deployment's gateway: "
                                      "in flight to replicas and waiting, as the autoscaler last saw them",
                                      labels=["deployment", "state"])
        for d in self.store.list_deployments():
            replicas.add_metric([d.name, "desired"], d.desired)
            replicas.add_metric([d.name, "ready"], int(d.status.get("ready", 0)))
            seen = d.status.get("observed") or {}
            in_flight.add_metric([d.name, "in_flight"], float(seen.get("inFlight", 0.0)))
            in_flight.add_metric([d.name, "waiting"], float(seen.get("waiting", 0.0)))
        yield replicas
        yield in_flight


def install_store_collector(store: Store) -> CollectorRegistry:
    """A registry with the process-wide metrics plus this store's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))  # first: it initialises the per-queue counters _Forward reports
    registry.register(_Forward())
    return registry


class _Forward(Collector):
    """Exposes REGISTRY's metrics through another registry."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from REGISTRY.collect()  # type: ignore[misc]
