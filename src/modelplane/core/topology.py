"""Where a node sits in the network: group > switch > node (a Dragonfly group, a leaf switch)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class TopologyPath:
    group: str = "default"
    switch: str = "default"

    def hops_to(self, other: TopologyPath) -> int:
        """Network hops between two nodes: 0 same switch, 2 same group, 4 across groups."""
        if self == other:
            return 0
        if self.group == other.group:
            return 2
        return 4


def cross_switch_links(paths: Iterable[TopologyPath]) -> int:
    """How many distinct switches beyond the first a gang spans (0 = all under one switch)."""
    switches = {(p.group, p.switch) for p in paths}
    return max(0, len(switches) - 1)


def groups_spanned(paths: Iterable[TopologyPath]) -> int:
    return len({p.group for p in paths})
