"""Filter plugins: the hard constraints a node must meet before it is scored.

Each filter is a small class with a name and ``admits(node, pod_set)``, as kube-scheduler's filter
plugins are. The static filters (everything but capacity) depend only on the node and the pod set's
constraints, so a round evaluates them once per distinct set of constraints and caches the result
(``Eligibility``); the capacity filter (``FitFilter``) is checked against live free capacity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from modelplane.core.affinity import matches_node_selector, untolerated_taints
from modelplane.core.node import Node
from modelplane.core.placement import NodeFree
from modelplane.core.workload import PodSet, TaskRequest


class NodeFilter(Protocol):
    name: str

    def admits(self, node: Node, ps: PodSet) -> bool: ...


class NodeStateFilter:
    """Only Ready nodes take new work (NotReady, Cordoned and Draining do not)."""

    name = "node state"

    def admits(self, node: Node, ps: PodSet) -> bool:
        return node.schedulable


class AcceleratorModelFilter:
    """A task that wants devices needs a node with enough of them, of an acceptable model."""

    name = "accelerator model"

    def admits(self, node: Node, ps: PodSet) -> bool:
        req = ps.request
        if not req.wants_gpu:
            return True
        if not node.gpu_model or node.gpu_count < req.gpu_count:
            return False
        return not req.gpu_models or node.gpu_model in req.gpu_models


class NodeSelectorFilter:
    name = "nodeSelector"

    def admits(self, node: Node, ps: PodSet) -> bool:
        return not ps.node_selector or matches_node_selector(ps.node_selector, node.labels)


class RequiredAffinityFilter:
    """Kubernetes required node affinity: terms ORed, expressions in a term ANDed."""

    name = "node affinity"

    def admits(self, node: Node, ps: PodSet) -> bool:
        return ps.affinity is None or ps.affinity.required_matches(node.name, node.labels)


class TaintFilter:
    """NoSchedule and NoExecute taints must each be tolerated; PreferNoSchedule only costs score."""

    name = "taints"

    def admits(self, node: Node, ps: PodSet) -> bool:
        return not node.taints or not untolerated_taints(list(node.taints), list(ps.tolerations))


class TeeFilter:
    """``tee: any`` needs a TEE node; ``tee: sgx`` (etc.) needs that kind. In the live system a node
    offers its TEE only while its attestation is verified and fresh (``control.scheduling``)."""

    name = "TEE (verified attestation)"

    def admits(self, node: Node, ps: PodSet) -> bool:
        if ps.tee is None:
            return True
        return node.tee is not None and (ps.tee == "any" or node.tee == ps.tee)


class FitFilter:
    """CPU, memory and devices (whole, or a share of one device) free now."""

    name = "capacity"

    @staticmethod
    def fits(free: NodeFree, req: TaskRequest) -> bool:
        return free.fits(req)


DEFAULT_FILTERS: tuple[NodeFilter, ...] = (
    NodeStateFilter(),
    AcceleratorModelFilter(),
    NodeSelectorFilter(),
    RequiredAffinityFilter(),
    TaintFilter(),
    TeeFilter(),
)


def constraint_key(ps: PodSet) -> tuple[object, ...]:
    """What the static filters read from a pod set; equal keys give equal answers."""
    req = ps.request
    return (
        tuple(sorted(ps.node_selector.items())),
        ps.affinity.model_dump_json() if ps.affinity is not None and ps.affinity.required is not None else "",
        ps.tolerations,
        ps.tee,
        req.gpu_count > 0,
        req.gpu_count,
        req.gpu_models,
    )


def first_failing(node: Node, ps: PodSet, filters: Sequence[NodeFilter] = DEFAULT_FILTERS) -> str | None:
    """Name of the first filter that rules the node out, or None when all admit it."""
    for f in filters:
        if not f.admits(node, ps):
            return f.name
    return None


@dataclass
class Eligible:
    """Nodes (by pool index) that pass every static filter for one set of constraints."""

    indices: list[int]
    members: set[int] = field(default_factory=set)
    cpu_first: list[int] | None = None  # for tasks without devices: nodes without devices first

    def __post_init__(self) -> None:
        self.members = set(self.indices)


HOSTNAME = "kubernetes.io/hostname"


def names_nodes(ps: PodSet) -> bool:
    """Whether the pod set's constraints can tell two otherwise identical nodes apart (by name)."""
    if HOSTNAME in ps.node_selector:
        return True
    required = ps.affinity.required if ps.affinity is not None else None
    if required is None:
        return False
    return any(t.match_fields or any(r.key == HOSTNAME for r in t.match_expressions)
               for t in required.node_selector_terms)


class Eligibility:
    """Per-round cache of static filter results, keyed by ``constraint_key``.

    Nodes that differ only in name (same model, size, state, TEE, taints and labels but the
    hostname) get the same answer from every static filter unless a pod set names nodes, so the
    filters run once per such class of nodes: a pool of thousands of nodes has a few hundred.
    """

    def __init__(self, nodes: Sequence[Node], filters: Sequence[NodeFilter] = DEFAULT_FILTERS) -> None:
        self.nodes = nodes
        self.filters = tuple(filters)
        self._by_key: dict[tuple[object, ...], Eligible] = {}
        self._by_id: dict[int, tuple[PodSet, Eligible]] = {}
        self._by_model: dict[str | None, list[int]] = {}
        classes: dict[tuple[object, ...], list[int]] = {}
        for i, n in enumerate(nodes):
            model = n.gpu_model if n.gpu_count else None
            self._by_model.setdefault(model, []).append(i)
            signature = (model, n.gpu_count, n.state, n.tee, n.taints,
                         frozenset(kv for kv in n.labels.items() if kv[0] != HOSTNAME))
            classes.setdefault(signature, []).append(i)
        self._classes: dict[str | None, list[list[int]]] = {}
        for members in classes.values():
            first = nodes[members[0]]
            self._classes.setdefault(first.gpu_model if first.gpu_count else None, []).append(members)

    def of(self, ps: PodSet) -> Eligible:
        hit = self._by_id.get(id(ps))
        if hit is not None and hit[0] is ps:
            return hit[1]
        key = constraint_key(ps)
        el = self._by_key.get(key)
        if el is None:
            el = Eligible(self._compute(ps))
            self._by_key[key] = el
        self._by_id[id(ps)] = (ps, el)
        return el

    def _compute(self, ps: PodSet) -> list[int]:
        req = ps.request
        if req.wants_gpu:
            models: list[str | None] = list(req.gpu_models or (m for m in self._by_model if m is not None))
        else:
            models = list(self._by_model)
        if names_nodes(ps):
            scope = sorted(i for m in models for i in self._by_model.get(m, []))
            return [i for i in scope if all(f.admits(self.nodes[i], ps) for f in self.filters)]
        out: list[int] = []
        for m in models:
            for members in self._classes.get(m, []):
                if all(f.admits(self.nodes[members[0]], ps) for f in self.filters):
                    out.extend(members)
        out.sort()
        return out
