"""Lineage graph store: one behaviour suite run against SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelplane.data.errors import DataError, ObjectNotFound
from modelplane.data.lineage import LineageStore


@pytest.fixture(params=["sqlite", "postgresql"])
def lineage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LineageStore]:
    """Every lineage test runs on both engines (PostgreSQL: the session's throwaway server)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'lineage.db'}"
    else:
        from tests.conftest import fresh_postgres_url

        url = fresh_postgres_url(request.getfixturevalue("postgres_server"))
    s = LineageStore(url)
    s.create_schema()
    yield s
    s.engine.dispose()


def build_example(s: LineageStore) -> dict[str, int]:
    """Two sources -> cleaned dataset -> training -> model -> deployment; a second model from source B."""
    ids = {
        "srcA": s.upsert_node("source", "s3://raw/a"),
        "srcB": s.upsert_node("source", "s3://raw/b"),
        "clean": s.upsert_node("dataset", "clean-v1"),
        "train": s.upsert_node("training", "run-1"),
        "model": s.upsert_node("model", "llm-7b", attrs={"version": 3}),
        "dep": s.upsert_node("deployment", "chat-prod"),
        "model2": s.upsert_node("model", "small"),
        "dep2": s.upsert_node("deployment", "edge"),
    }
    for a, b in [("srcA", "clean"), ("srcB", "clean"), ("clean", "train"), ("train", "model"), ("model", "dep"),
                 ("srcB", "model2"), ("model2", "dep2")]:
        s.add_edge(ids[a], ids[b])
    return ids


def names(hits: list) -> dict[str, int]:  # type: ignore[type-arg]
    return {h.node.name: h.depth for h in hits}


def test_upstream_and_downstream_with_depth(lineage: LineageStore) -> None:
    ids = build_example(lineage)
    assert names(lineage.upstream(ids["dep"], depth=1)) == {"llm-7b": 1}
    assert names(lineage.upstream(ids["dep"], depth=10)) == {
        "llm-7b": 1, "run-1": 2, "clean-v1": 3, "s3://raw/a": 4, "s3://raw/b": 4}
    assert names(lineage.downstream(ids["srcB"], depth=2)) == {"clean-v1": 1, "small": 1, "run-1": 2, "edge": 2}


def test_impact_finds_deployments_trained_on_a_source(lineage: LineageStore) -> None:
    ids = build_example(lineage)
    assert names(lineage.impact(ids["srcA"])) == {"chat-prod": 4}
    assert names(lineage.impact(ids["srcB"])) == {"chat-prod": 4, "edge": 2}
    assert names(lineage.impact(ids["srcB"], kind="model")) == {"llm-7b": 3, "small": 1}


def test_upsert_is_idempotent_and_nodes_are_found(lineage: LineageStore) -> None:
    ids = build_example(lineage)
    assert lineage.upsert_node("model", "llm-7b") == ids["model"]
    lineage.add_edge(ids["model"], ids["dep"])  # duplicate edge: no error, no second row
    assert len(lineage.upstream(ids["dep"], depth=1)) == 1
    assert lineage.find("model", "llm-7b").attrs == {"version": 3}
    with pytest.raises(ObjectNotFound):
        lineage.find("model", "nope")


def test_cycles_terminate_and_bad_input_is_refused(lineage: LineageStore) -> None:
    a, b = lineage.upsert_node("dataset", "a"), lineage.upsert_node("dataset", "b")
    lineage.add_edge(a, b)
    lineage.add_edge(b, a)
    assert names(lineage.downstream(a, depth=50)) == {"b": 1, "a": 2}
    with pytest.raises(DataError, match="out of range"):
        lineage.downstream(a, depth=0)
    with pytest.raises(DataError, match="unknown lineage node kind"):
        lineage.upsert_node("table", "x")
    with pytest.raises(DataError, match="itself"):
        lineage.add_edge(a, a)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edges=st.sets(st.tuples(st.integers(0, 11), st.integers(0, 11)).filter(lambda e: e[0] != e[1]), max_size=30),
       start=st.integers(0, 11), depth=st.integers(1, 6))
def test_walk_matches_breadth_first_search(tmp_path_factory: pytest.TempPathFactory, edges: set[tuple[int, int]],
                                           start: int, depth: int) -> None:
    s = LineageStore("sqlite://")  # in memory: one connection, so one database
    s.create_schema()
    ids = [s.upsert_node("dataset", f"n{i}") for i in range(12)]
    s.bulk_load([], [(ids[a], ids[b], "flows_to") for a, b in edges])
    expected: dict[int, int] = {}
    frontier, seen_depth = {start}, 0
    while frontier and seen_depth < depth:
        seen_depth += 1
        frontier = {b for a, b in edges if a in frontier}
        for n in frontier:
            expected.setdefault(n, seen_depth)
    got = {int(h.node.name[1:]): h.depth for h in s.downstream(ids[start], depth=depth)}
    assert got == expected
