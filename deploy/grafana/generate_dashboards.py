"""Writes the Grafana dashboards in ./dashboards from the panel lists below (run after editing them).

Every expression may use only metrics that ``modelplane up`` exposes at /metrics;
tests/obs/test_dashboards.py scrapes a live platform and checks that they do.
    python deploy/grafana/generate_dashboards.py
"""

from __future__ import annotations

import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "prometheus"}
HERE = Path(__file__).parent / "dashboards"
RI = "$__rate_interval"

# (title, kind, [(expr, legend)], unit)
Panel = tuple[str, str, list[tuple[str, str]], str]

DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "cluster-overview": ("modelplane: cluster overview", [
        ("Nodes by state", "stat", [("sum by (state) (modelplane_nodes)", "{{state}}")], "short"),
        ("Accelerators allocated", "timeseries",
         [('sum by (model) (modelplane_accelerators{status="allocated"})', "{{model}}")], "short"),
        ("Accelerators idle", "timeseries",
         [('sum by (model) (modelplane_accelerators{status="idle"})', "{{model}}")], "short"),
        ("Accelerator utilisation", "gauge",
         [('sum by (model) (modelplane_accelerators{status="allocated"}) / sum by (model) (modelplane_accelerators)',
           "{{model}}")], "percentunit"),
        ("Jobs by state", "timeseries", [("sum by (state) (modelplane_jobs)", "{{state}}")], "short"),
        ("Scheduler round p95", "timeseries",
         [(f"histogram_quantile(0.95, sum by (le) (rate(modelplane_scheduler_round_seconds_bucket[{RI}])))", "p95")],
         "s"),
        ("API requests by status", "timeseries",
         [(f"sum by (status) (rate(modelplane_http_request_duration_seconds_count[{RI}]))", "{{status}}")], "reqps"),
        ("API latency p95 by route", "timeseries",
         [(f"histogram_quantile(0.95, sum by (le, route) (rate(modelplane_http_request_duration_seconds_bucket[{RI}])))",
           "{{route}}")], "s"),
        ("Pool price per hour", "stat", [("sum(modelplane_node_price_per_hour)", "total")], "currencyUSD"),
    ]),
    "queues-fairness": ("modelplane: queues and fairness", [
        ("Quota per queue", "timeseries", [("sum by (queue) (modelplane_queue_quota_accelerators)", "{{queue}}")],
         "short"),
        ("Used per queue", "timeseries", [("sum by (queue) (modelplane_queue_used_accelerators)", "{{queue}}")],
         "short"),
        ("Borrowed per queue", "timeseries",
         [("sum by (queue) (modelplane_queue_borrowed_accelerators)", "{{queue}}")], "short"),
        ("Lent per queue", "timeseries", [("sum by (queue) (modelplane_queue_lent_accelerators)", "{{queue}}")],
         "short"),
        ("Share of quota in use", "bargauge",
         [("sum by (queue) (modelplane_queue_used_accelerators) / sum by (queue) (modelplane_queue_quota_accelerators)",
           "{{queue}}")], "percentunit"),
        ("Pending jobs per queue", "timeseries", [('sum by (queue) (modelplane_jobs{state="Pending"})', "{{queue}}")],
         "short"),
        ("Placement latency p95 per queue", "timeseries",
         [(f"histogram_quantile(0.95, sum by (le, queue) (rate(modelplane_placement_latency_seconds_bucket[{RI}])))",
           "{{queue}}")], "s"),
        ("Placements per queue", "timeseries",
         [(f"sum by (queue) (rate(modelplane_placements_total[{RI}]))", "{{queue}}")], "ops"),
        ("Preemptions per queue", "timeseries",
         [(f"sum by (queue) (increase(modelplane_preemptions_total[{RI}]))", "{{queue}}")], "short"),
    ]),
    "training-runs": ("modelplane: training runs", [
        ("Training jobs by state", "timeseries",
         [('sum by (state) (modelplane_workloads{kind="TrainingJob"})', "{{state}}")], "short"),
        ("Job transitions", "timeseries",
         [(f"sum by (to_state, reason) (increase(modelplane_job_transitions_total[{RI}]))", "{{to_state}} {{reason}}")],
         "short"),
        ("Backend launch time p95", "timeseries",
         [(f"histogram_quantile(0.95, sum by (le, backend) (rate(modelplane_backend_launch_seconds_bucket[{RI}])))",
           "{{backend}}")], "s"),
        ("Migrations", "timeseries", [(f"increase(modelplane_migrations_total[{RI}])", "migrations")], "short"),
        ("Preemptions", "timeseries", [(f"sum(increase(modelplane_preemptions_total[{RI}]))", "preemptions")],
         "short"),
        ("Accelerators used by training queues", "timeseries",
         [('sum by (model) (modelplane_queue_used_accelerators{queue=~"training.*"})', "{{model}}")], "short"),
    ]),
    "inference": ("modelplane: inference", [
        ("Deployments by state", "timeseries",
         [('sum by (state) (modelplane_workloads{kind="InferenceDeployment"})', "{{state}}")], "short"),
        ("Accelerators used by inference queues", "timeseries",
         [('sum by (model) (modelplane_queue_used_accelerators{queue=~"inference.*"})', "{{model}}")], "short"),
        ("Borrowed by inference queues", "timeseries",
         [('sum by (model) (modelplane_queue_borrowed_accelerators{queue=~"inference.*"})', "{{model}}")], "short"),
        ("Placement latency p95 (inference)", "timeseries",
         [(f'histogram_quantile(0.95, sum by (le) (rate(modelplane_placement_latency_seconds_bucket'
           f'{{queue=~"inference.*"}}[{RI}])))', "p95")], "s"),
    ]),
    "data": ("modelplane: data", [
        ("Pipelines by state", "timeseries", [('sum by (state) (modelplane_workloads{kind="Pipeline"})', "{{state}}")],
         "short"),
        ("Batch queue usage", "timeseries",
         [('sum by (model) (modelplane_queue_used_accelerators{queue=~"batch.*"})', "{{model}}")], "short"),
        ("Federated jobs by state", "timeseries",
         [('sum by (state) (modelplane_workloads{kind="FederatedJob"})', "{{state}}")], "short"),
    ]),
    "security": ("modelplane: security", [
        ("Audit log entries", "stat", [("modelplane_audit_log_entries", "entries")], "short"),
        ("Audit appends per minute", "timeseries", [(f"rate(modelplane_audit_log_entries[{RI}]) * 60", "appends")],
         "short"),
        ("Active policy version", "stat", [("modelplane_policy_version", "version")], "short"),
        ("Unauthenticated calls (401) by route", "timeseries",
         [(f'sum by (route) (rate(modelplane_http_request_duration_seconds_count{{status="401"}}[{RI}]))', "{{route}}")],
         "reqps"),
        ("Denied calls (403) by route", "timeseries",
         [(f'sum by (route) (rate(modelplane_http_request_duration_seconds_count{{status="403"}}[{RI}]))', "{{route}}")],
         "reqps"),
        ("Logins", "timeseries",
         [(f'sum by (status) (rate(modelplane_http_request_duration_seconds_count{{route="/api/v1/auth/login"}}[{RI}]))',
           "{{status}}")], "reqps"),
    ]),
}


def panel(i: int, p: Panel) -> dict[str, object]:
    title, kind, targets, unit = p
    return {
        "id": i + 1, "type": kind, "title": title, "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [{"refId": chr(65 + k), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for k, (expr, legend) in enumerate(targets)],
    }


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, object]:
    return {
        "uid": f"modelplane-{uid}", "title": title, "tags": ["modelplane"], "schemaVersion": 39, "version": 1,
        "editable": True, "refresh": "30s", "time": {"from": "now-6h", "to": "now"}, "timezone": "utc",
        "templating": {"list": []}, "annotations": {"list": []},
        "panels": [panel(i, p) for i, p in enumerate(panels)],
    }


def main() -> None:
    HERE.mkdir(parents=True, exist_ok=True)
    for uid, (title, panels) in DASHBOARDS.items():
        (HERE / f"{uid}.json").write_text(json.dumps(dashboard(uid, title, panels), indent=2) + "\n")


if __name__ == "__main__":
    main()
