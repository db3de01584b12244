"""Build a replica policy from a deployment manifest's ``autoscaling`` block."""

from __future__ import annotations

from modelplane.autoscale.replica import Bounds, HpaPolicy, KpaPolicy, QueueAwarePolicy, ReplicaPolicy
from modelplane.core.errors import InvalidSpec
from modelplane.core.spec import AutoscalingSpec


def policy_from_spec(spec: AutoscalingSpec, kind: str = "ours") -> ReplicaPolicy:
    """``kind`` is ``ours`` (default), ``kpa`` or ``hpa``; the manifest gives bounds and target concurrency."""
    if spec.min_replicas > spec.max_replicas:
        raise InvalidSpec(
            f"autoscaling.minReplicas ({spec.min_replicas}) > maxReplicas ({spec.max_replicas})",
            hint="set minReplicas <= maxReplicas", field="spec.autoscaling",
        )
    bounds = Bounds(spec.min_replicas, spec.max_replicas)
    if kind == "ours":
        return QueueAwarePolicy(spec.target_concurrency, bounds, utilization=0.6, stable_s=30.0)
    if kind == "kpa":
        return KpaPolicy(spec.target_concurrency, bounds)
    if kind == "hpa":
        return HpaPolicy(0.7 * spec.target_concurrency, bounds)
    raise InvalidSpec(f"unknown autoscaler {kind!r}", hint="use ours, kpa or hpa", field="autoscaler")
