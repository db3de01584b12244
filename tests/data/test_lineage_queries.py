"""The lookups behind the API, CLI and console: locate by name, search, edges of a walk, and the
walk drawn as a tree (every node once, at its fewest hops). Both engines, as the store's own suite."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.data.errors import DataError, ObjectNotFound
from modelplane.data.lineage import LineageStore
from modelplane.data.lineage_tree import TreeNode, walk_tree
from tests.data.test_lineage import build_example, lineage  # noqa: F401  (the two-engine fixture)


def test_locate_searches_one_namespace_or_all(lineage: LineageStore) -> None:  # noqa: F811
    ids = build_example(lineage)
    assert lineage.locate("model", "llm-7b").id == ids["model"]
    other = lineage.upsert_node("model", "llm-7b", "team-b")
    with pytest.raises(DataError, match="several namespaces") as exc:
        lineage.locate("model", "llm-7b")
    assert exc.value.field == "namespace"
    assert lineage.locate("model", "llm-7b", "team-b").id == other
    with pytest.raises(ObjectNotFound) as nf:
        lineage.locate("model", "nope")
    assert "/lineage/nodes" in nf.value.hint
    with pytest.raises(DataError, match="unknown lineage node kind"):
        lineage.locate("table", "x")


def test_search_by_part_of_a_name_kind_and_namespace(lineage: LineageStore) -> None:  # noqa: F811
    build_example(lineage)
    assert [n.name for n in lineage.search(name="RAW")] == ["s3://raw/a", "s3://raw/b"]
    assert [n.name for n in lineage.search(kind="model")] == ["llm-7b", "small"]
    assert lineage.search(name="_") == [] and lineage.search(name="%") == []  # wildcards are literal
    assert len(lineage.search(limit=3)) == 3
    assert lineage.search(namespace="elsewhere") == []
    with pytest.raises(DataError, match="limit"):
        lineage.search(limit=0)


def test_edges_among_a_walk(lineage: LineageStore) -> None:  # noqa: F811
    ids = build_example(lineage)
    hits = lineage.upstream(ids["dep"], depth=3)
    edges = lineage.edges_among([ids["dep"], *(h.node.id for h in hits)])
    assert {(s, d) for s, d, _ in edges} == {(ids["clean"], ids["train"]), (ids["train"], ids["model"]),
                                             (ids["model"], ids["dep"])}
    assert lineage.edges_among([]) == []


def _levels(t: TreeNode, level: int = 0) -> list[tuple[int, int]]:
    out = [(t.node["id"], level)]
    for c in t.children:
        assert c.depth == level + 1
        out.extend(_levels(c, level + 1))
    return out


@settings(max_examples=25, deadline=None)
@given(edges=st.sets(st.tuples(st.integers(0, 9), st.integers(0, 9)).filter(lambda e: e[0] != e[1]), max_size=25),
       start=st.integers(0, 9), depth=st.integers(1, 5), direction=st.sampled_from(["upstream", "downstream"]))
def test_tree_holds_every_node_of_a_walk_once_at_its_hop_count(edges: set[tuple[int, int]], start: int, depth: int,
                                                               direction: str) -> None:
    s = LineageStore("sqlite://")
    s.create_schema()
    ids = [s.upsert_node("dataset", f"n{i}") for i in range(10)]
    s.bulk_load([], [(ids[a], ids[b], "flows_to") for a, b in edges])
    hits = s.walk(ids[start], direction, depth=depth)  # type: ignore[arg-type]
    items = [{"id": h.node.id, "depth": h.depth} for h in hits]
    edge_rows = [{"src": a, "dst": b} for a, b, _ in s.edges_among([ids[start], *(h.node.id for h in hits)])]
    tree = walk_tree({"id": ids[start]}, items, edge_rows, direction)
    placed = _levels(tree)
    assert sorted(placed[1:]) == sorted((h.node.id, h.depth) for h in hits if h.node.id != ids[start])
    s.engine.dispose()
