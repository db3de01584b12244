"""Node affinity, taints and tolerations with exactly the Kubernetes schema and semantics.

Required terms are ORed; the expressions inside one term are ANDed; preferred terms add their
weight to a node's score when they match. Field names are Kubernetes' own (camelCase), so a
Kubernetes user's ``affinity:`` block works here unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _K8sModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    GT = "Gt"
    LT = "Lt"


class NodeSelectorRequirement(_K8sModel):
    key: str
    operator: Operator
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_values(self) -> NodeSelectorRequirement:
        op = self.operator
        if op in (Operator.IN, Operator.NOT_IN) and not self.values:
            raise ValueError(f"operator {op.value} needs at least one value (key {self.key!r})")
        if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and self.values:
            raise ValueError(f"operator {op.value} takes no values (key {self.key!r})")
        if op in (Operator.GT, Operator.LT):
            if len(self.values) != 1:
                raise ValueError(f"operator {op.value} needs exactly one integer value (key {self.key!r})")
            try:
                int(self.values[0])
            except ValueError:
                raise ValueError(
                    f"operator {op.value} needs an integer value, got {self.values[0]!r} (key {self.key!r})"
                ) from None
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        present = self.key in labels
        if op is Operator.EXISTS:
            return present
        if op is Operator.DOES_NOT_EXIST:
            return not present
        if op is Operator.IN:
            return present and labels[self.key] in self.values
        if op is Operator.NOT_IN:
            # Kubernetes: NotIn matches a node without the label.
            return not present or labels[self.key] not in self.values
        if not present:
            return False
        try:
            have = int(labels[self.key])
        except ValueError:
            return False
        want = int(self.values[0])
        return have > want if op is Operator.GT else have < want


class NodeSelectorTerm(_K8sModel):
    match_expressions: list[NodeSelectorRequirement] = Field(default_factory=list, alias="matchExpressions")
    match_fields: list[NodeSelectorRequirement] = Field(default_factory=list, alias="matchFields")

    def matches(self, node_name: str, labels: Mapping[str, str]) -> bool:
        # Kubernetes: a term with no requirements matches no node.
        if not self.match_expressions and not self.match_fields:
            return False
        fields = {"metadata.name": node_name}
        return all(r.matches(labels) for r in self.match_expressions) and all(
            r.matches(fields) for r in self.match_fields
        )


class NodeSelector(_K8sModel):
    node_selector_terms: Annotated[list[NodeSelectorTerm], Field(min_length=1)] = Field(alias="nodeSelectorTerms")

    def matches(self, node_name: str, labels: Mapping[str, str]) -> bool:
        return any(t.matches(node_name, labels) for t in self.node_selector_terms)


class PreferredSchedulingTerm(_K8sModel):
    weight: Annotated[int, Field(ge=1, le=100)]
    preference: NodeSelectorTerm


class NodeAffinity(_K8sModel):
    required: NodeSelector | None = Field(default=None, alias="requiredDuringSchedulingIgnoredDuringExecution")
    preferred: list[PreferredSchedulingTerm] = Field(
        default_factory=list, alias="preferredDuringSchedulingIgnoredDuringExecution"
    )

    def required_matches(self, node_name: str, labels: Mapping[str, str]) -> bool:
        return self.required is None or self.required.matches(node_name, labels)

    def preferred_score(self, node_name: str, labels: Mapping[str, str]) -> int:
        return sum(p.weight for p in self.preferred if p.preference.matches(node_name, labels))


class Affinity(_K8sModel):
    node_affinity: NodeAffinity | None = Field(default=None, alias="nodeAffinity")


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Taint(_K8sModel):
    key: str
    value: str = ""
    effect: TaintEffect


class Toleration(_K8sModel):
    key: str = ""
    operator: str = Field(default="Equal", pattern="^(Equal|Exists)$")
    value: str = ""
    effect: TaintEffect | None = None

    def tolerates(self, taint: Taint) -> bool:
        if self.effect is not None and self.effect != taint.effect:
            return False
        if self.key == "":
            # An empty key with Exists tolerates every taint.
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


def untolerated_taints(taints: list[Taint], tolerations: list[Toleration]) -> list[Taint]:
    """Hard taints (NoSchedule, NoExecute) that no toleration covers: any one rules the node out."""
    return [
        t
        for t in taints
        if t.effect != TaintEffect.PREFER_NO_SCHEDULE and not any(tol.tolerates(t) for tol in tolerations)
    ]


def matches_node_selector(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
