"""A lineage walk (nodes with hop counts, and the edges between them) as a nested tree to render.

Each node hangs under the first node it was reached from, breadth-first, so it sits at its fewest
hops and a diamond-shaped graph does not repeat whole subtrees; ``also`` counts its other parents.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TreeNode:
    node: dict[str, Any]
    depth: int
    also: int = 0
    children: list[TreeNode] = field(default_factory=list)


def walk_tree(start: dict[str, Any], items: list[dict[str, Any]], edges: list[dict[str, Any]],
              direction: str) -> TreeNode:
    nodes = {n["id"]: n for n in items}
    children: dict[int, list[int]] = {}
    parents: dict[int, int] = {}
    for e in edges:
        a, b = (e["dst"], e["src"]) if direction == "upstream" else (e["src"], e["dst"])
        children.setdefault(a, []).append(b)
        parents[b] = parents.get(b, 0) + 1
    root = TreeNode(start, 0)
    placed = {start["id"]: root}
    queue = deque([start["id"]])
    while queue:
        cur = queue.popleft()
        for child in sorted(children.get(cur, []), key=lambda i: (nodes.get(i, {}).get("depth", 0), i)):
            if child in placed or child not in nodes:
                continue
            t = TreeNode(nodes[child], nodes[child]["depth"], max(parents.get(child, 1) - 1, 0))
            placed[cur].children.append(t)
            placed[child] = t
            queue.append(child)
    return root
