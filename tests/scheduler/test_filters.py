"""Each filter plugin on hand-made nodes and pod sets."""

from __future__ import annotations

from types import MappingProxyType

from modelplane.core.affinity import Taint, TaintEffect, Toleration
from modelplane.core.node import NodeState
from modelplane.core.workload import PodSet
from modelplane.scheduler.filters import (
    DEFAULT_FILTERS,
    AcceleratorModelFilter,
    Eligibility,
    NodeSelectorFilter,
    NodeStateFilter,
    RequiredAffinityFilter,
    TaintFilter,
    TeeFilter,
    first_failing,
)
from tests.scheduler.factories import affinity, node, request


def pod_set(**kw: object) -> PodSet:
    base: dict[str, object] = {"name": "worker", "count": 1, "request": request()}
    base.update(kw)
    if "node_selector" in base:
        base["node_selector"] = MappingProxyType(dict(base["node_selector"]))  # type: ignore[call-overload]
    return PodSet(**base)  # type: ignore[arg-type]


def test_node_state_only_ready_nodes() -> None:
    f = NodeStateFilter()
    assert f.admits(node("a"), pod_set())
    for state in (NodeState.CORDONED, NodeState.DRAINING, NodeState.NOT_READY):
        assert not f.admits(node("a", state=state), pod_set())


def test_accelerator_model_list_and_count() -> None:
    f = AcceleratorModelFilter()
    v100 = pod_set(request=request(2, models=("V100M16", "V100M32")))
    assert f.admits(node("a", model="V100M32"), v100)
    assert not f.admits(node("a", model="NVIDIA-A100"), v100)
    assert not f.admits(node("a", model="V100M16", gpus=1), v100)  # wants 2 devices on one node
    assert not f.admits(node("cpu", model=None), pod_set(request=request(1)))
    assert f.admits(node("cpu", model=None), pod_set(request=request(0)))  # CPU-only task goes anywhere


def test_node_selector_needs_every_label() -> None:
    f = NodeSelectorFilter()
    n = node("a", labels={"zone": "a", "disk": "ssd"})
    assert f.admits(n, pod_set(node_selector={"zone": "a"}))
    assert f.admits(n, pod_set(node_selector={"zone": "a", "disk": "ssd"}))
    assert not f.admits(n, pod_set(node_selector={"zone": "a", "disk": "hdd"}))


def test_required_affinity_terms_or_expressions_and() -> None:
    f = RequiredAffinityFilter()
    aff = affinity({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                              {"key": "gen", "operator": "Gt", "values": ["3"]}]},
        {"matchExpressions": [{"key": "special", "operator": "Exists"}]},
    ]}})
    ps = pod_set(affinity=aff)
    assert f.admits(node("a", labels={"zone": "a", "gen": "4"}), ps)
    assert not f.admits(node("b", labels={"zone": "a", "gen": "3"}), ps)  # second expression fails
    assert f.admits(node("c", labels={"special": "yes"}), ps)  # second term alone
    assert not f.admits(node("d", labels={"zone": "b", "gen": "9"}), ps)


def test_preferred_only_affinity_never_filters() -> None:
    aff = affinity({"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]})
    assert RequiredAffinityFilter().admits(node("b", labels={"zone": "b"}), pod_set(affinity=aff))


def test_taints_need_tolerations_except_prefer_no_schedule() -> None:
    f = TaintFilter()
    hard = node("a", taints=[Taint(key="gpu", value="x", effect=TaintEffect.NO_SCHEDULE)])
    soft = node("b", taints=[Taint(key="gpu", value="x", effect=TaintEffect.PREFER_NO_SCHEDULE)])
    assert not f.admits(hard, pod_set())
    assert f.admits(hard, pod_set(tolerations=(Toleration(key="gpu", value="x"),)))
    assert not f.admits(hard, pod_set(tolerations=(Toleration(key="gpu", value="y"),)))
    assert f.admits(hard, pod_set(tolerations=(Toleration(key="gpu", operator="Exists"),)))
    assert f.admits(soft, pod_set())


def test_tee_any_or_kind() -> None:
    f = TeeFilter()
    assert f.admits(node("plain"), pod_set())
    assert not f.admits(node("plain"), pod_set(tee="any"))
    assert f.admits(node("t", tee="tdx"), pod_set(tee="any"))
    assert f.admits(node("t", tee="tdx"), pod_set(tee="tdx"))
    assert not f.admits(node("t", tee="tdx"), pod_set(tee="sgx"))


def test_first_failing_names_the_filter() -> None:
    n = node("a", taints=[Taint(key="k", effect=TaintEffect.NO_EXECUTE)])
    assert first_failing(n, pod_set()) == "taints"
    assert first_failing(node("a"), pod_set()) is None


def test_eligibility_matches_the_filters_and_is_shared_by_equal_constraints() -> None:
    nodes = [
        node("a", labels={"zone": "a"}),
        node("b", model="AMD-MI250", labels={"zone": "b"}),
        node("c", taints=[Taint(key="spot", effect=TaintEffect.NO_SCHEDULE)]),
        node("d", state=NodeState.CORDONED),
        node("e", model=None),
    ]
    el = Eligibility(nodes)
    for ps in (pod_set(), pod_set(request=request(0)), pod_set(node_selector={"zone": "b"}),
               pod_set(request=request(1, models=("AMD-MI250",))),
               pod_set(tolerations=(Toleration(key="spot", operator="Exists"),))):
        want = [i for i, n in enumerate(nodes) if all(f.admits(n, ps) for f in DEFAULT_FILTERS)]
        assert el.of(ps).indices == want
    assert el.of(pod_set()) is el.of(pod_set())  # equal constraints, one computation


def test_constraints_that_name_a_node_are_evaluated_per_node() -> None:
    # a and b differ only by name: one class for the filters, unless a pod set names a node.
    nodes = [node("a"), node("b")]
    el = Eligibility(nodes)
    by_label = affinity({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}]}]}})
    by_field = affinity({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["b"]}]}]}})
    assert el.of(pod_set(affinity=by_label)).indices == [1]
    assert el.of(pod_set(affinity=by_field)).indices == [0]
    assert el.of(pod_set(node_selector={"kubernetes.io/hostname": "a"})).indices == [0]
    assert el.of(pod_set()).indices == [0, 1]
