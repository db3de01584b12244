"""Kubernetes node-affinity semantics, taken case by case from the Kubernetes documentation."""

import pytest
from pydantic import ValidationError

from modelplane.core.affinity import (
    NodeAffinity,
    NodeSelectorRequirement,
    Taint,
    Toleration,
    untolerated_taints,
)


def affinity(required=None, preferred=None) -> NodeAffinity:
    doc = {}
    if required is not None:
        doc["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": required}
    if preferred is not None:
        doc["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    return NodeAffinity.model_validate(doc)


LABELS = {"gpu": "a100", "zone": "z1", "gpus": "8"}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ({"key": "gpu", "operator": "In", "values": ["a100", "h100"]}, True),
        ({"key": "gpu", "operator": "In", "values": ["h100"]}, False),
        ({"key": "gpu", "operator": "NotIn", "values": ["h100"]}, True),
        ({"key": "absent", "operator": "NotIn", "values": ["x"]}, True),  # NotIn matches a missing label
        ({"key": "gpu", "operator": "Exists"}, True),
        ({"key": "absent", "operator": "Exists"}, False),
        ({"key": "absent", "operator": "DoesNotExist"}, True),
        ({"key": "gpus", "operator": "Gt", "values": ["4"]}, True),
        ({"key": "gpus", "operator": "Gt", "values": ["8"]}, False),
        ({"key": "gpus", "operator": "Lt", "values": ["9"]}, True),
        ({"key": "gpu", "operator": "Gt", "values": ["1"]}, False),  # non-integer label never matches Gt
        ({"key": "absent", "operator": "Lt", "values": ["1"]}, False),
    ],
)
def test_operators(expr, expected):
    assert NodeSelectorRequirement.model_validate(expr).matches(LABELS) is expected


def test_terms_are_ored_and_expressions_anded():
    a = affinity(required=[
        {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]},
                              {"key": "zone", "operator": "In", "values": ["z2"]}]},  # false (AND)
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]},  # true
    ])
    assert a.required_matches("n1", LABELS)
    b = affinity(required=[
        {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]},
                              {"key": "zone", "operator": "In", "values": ["z2"]}]},
    ])
    assert not b.required_matches("n1", LABELS)


def test_empty_term_matches_nothing_and_match_fields_select_by_name():
    assert not affinity(required=[{}]).required_matches("n1", LABELS)
    by_name = affinity(required=[{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}])
    assert by_name.required_matches("n1", LABELS)
    assert not by_name.required_matches("n2", LABELS)


def test_preferred_weights_add_up():
    a = affinity(preferred=[
        {"weight": 10, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}},
        {"weight": 5, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}},
        {"weight": 70, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z9"]}]}},
    ])
    assert a.preferred_score("n1", LABELS) == 15
    assert a.required_matches("n1", {})  # no required terms: every node


@pytest.mark.parametrize(
    "bad",
    [
        {"key": "a", "operator": "In", "values": []},
        {"key": "a", "operator": "Exists", "values": ["x"]},
        {"key": "a", "operator": "Gt", "values": ["x"]},
        {"key": "a", "operator": "Gt", "values": ["1", "2"]},
        {"key": "a", "operator": "Near", "values": ["1"]},
    ],
)
def test_malformed_requirements_are_refused(bad):
    with pytest.raises(ValidationError):
        NodeSelectorRequirement.model_validate(bad)


def test_taints_and_tolerations():
    taint = Taint(key="npu", value="ascend", effect="NoSchedule")
    soft = Taint(key="spot", value="true", effect="PreferNoSchedule")
    assert untolerated_taints([taint, soft], []) == [taint]  # PreferNoSchedule never rules a node out
    assert untolerated_taints([taint], [Toleration(key="npu", operator="Exists")]) == []
    assert untolerated_taints([taint], [Toleration(key="npu", value="ascend")]) == []
    assert untolerated_taints([taint], [Toleration(key="npu", value="other")]) == [taint]
    assert untolerated_taints([taint], [Toleration(key="npu", operator="Exists", effect="NoExecute")]) == [taint]
    assert untolerated_taints([taint], [Toleration(operator="Exists")]) == []  # empty key + Exists: all
