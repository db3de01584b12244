"""Node scoring for placement: the interface every score plugin implements, and its registry.

A scorer looks at one node's free capacity and one task's request and says how good it would be to
put the task there, and on which devices (FGD, for instance, picks the device that leaves the least
fragmentation). The placement framework filters nodes first, then asks the scorer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from modelplane.core.placement import NodeFree
from modelplane.core.workload import TaskRequest


@dataclass(frozen=True)
class ScoreContext:
    """What a scorer may know beyond the node: the expected mix of task sizes (request, weight),
    as FGD uses to estimate fragmentation, and a seed for scorers that draw at random."""

    workload_mix: Sequence[tuple[TaskRequest, float]] = ()
    seed: int = 0


class NodeScorer(Protocol):
    name: str

    def score(self, free: NodeFree, request: TaskRequest, ctx: ScoreContext) -> tuple[float, tuple[int, ...]] | None:
        """Higher is better; None when the request does not fit. Returns (score, devices)."""
        ...


_SCORERS: dict[str, Callable[[], NodeScorer]] = {}


def register_scorer(name: str) -> Callable[[Callable[[], NodeScorer]], Callable[[], NodeScorer]]:
    def deco(factory: Callable[[], NodeScorer]) -> Callable[[], NodeScorer]:
        _SCORERS[name] = factory
        return factory

    return deco


def create_scorer(name: str) -> NodeScorer:
    if name not in _SCORERS:
        raise KeyError(f"unknown scorer {name!r}; known: {', '.join(sorted(_SCORERS))}")
    return _SCORERS[name]()


def scorer_names() -> list[str]:
    return sorted(_SCORERS)
