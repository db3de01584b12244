"""Stream sources against throw-away servers: Redis Streams (XREADGROUP) and NATS JetStream (pull
consumer). Bounded reads; entries are acknowledged only after the sinks commit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import redis

from modelplane.data.errors import MissingDependency
from modelplane.data.localservers import nats_server
from modelplane.data.pipeline import from_mapping
from modelplane.data.pipeline.runner import run
from modelplane.data.tfrecord import iter_records

SCHEMA = {"fields": {"id": {"type": "int", "min": 0}, "v": {"type": "float"}}}


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        with nats_server(tmp_path_factory.mktemp("nats")) as url:
            yield url
    except MissingDependency as exc:
        pytest.fail(f"nats-server is needed for the NATS JetStream tests: {exc}")


def pipeline(tmp_path: Path, source: dict[str, Any], out: str = "out", sink: str = "parquet") -> dict[str, Any]:
    return {"name": "stream-test", "sources": [{"name": "s", "schema": SCHEMA, **source}],
            "sinks": [{"type": sink, "path": str(tmp_path / out)}],
            "deadLetter": {"path": str(tmp_path / f"{out}-dead")},
            "lineage": {"url": f"sqlite:///{tmp_path / 'lineage.db'}"}}


def ids(folder: Path) -> list[int]:
    return sorted(r["id"] for r in pq.read_table(folder).to_pylist())


def test_redis_stream_group_read_is_bounded_and_acked_after_commit(tmp_path: Path, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    stream = f"events-{tmp_path.name}"
    for i in range(30):
        r.xadd(stream, {"data": json.dumps({"id": i, "v": i / 2})})
    r.xadd(stream, {"data": "{broken"})
    r.xadd(stream, {"data": json.dumps({"id": -5, "v": 1.0})})
    src = {"type": "redis_stream", "url": redis_url, "stream": stream, "group": "etl", "idleTimeoutSeconds": 0.3}

    first = run(from_mapping(pipeline(tmp_path, {**src, "maxRecords": 12}, "a")))
    assert ids(tmp_path / "a") == list(range(12))
    assert first.acked == {"s": 12}
    assert r.xpending(stream, "etl")["pending"] == 0

    # A reader that died after reading, before committing: its entries stay pending for the consumer.
    stale = r.xreadgroup("etl", "modelplane-pipeline", {stream: ">"}, count=5)
    assert len(stale[0][1]) == 5 and r.xpending(stream, "etl")["pending"] == 5

    second = run(from_mapping(pipeline(tmp_path, src, "b")))
    assert ids(tmp_path / "b") == list(range(12, 30))  # the 5 pending ones first, then the rest
    dead = [json.loads(line) for f in (tmp_path / "b-dead").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert sorted((d["stage"], d["rule"]) for d in dead) == [("parse", "json"), ("validate", "min")]
    assert second.acked == {"s": 20} and r.xpending(stream, "etl")["pending"] == 0

    third = run(from_mapping(pipeline(tmp_path, src, "c", sink="tfrecord")))
    assert third.read == 0 and not list((tmp_path / "c").glob("*.tfrecord"))


def test_redis_stream_without_group_reads_fields_as_the_record(tmp_path: Path, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    stream = f"plain-{tmp_path.name}"
    first = r.xadd(stream, {"id": "0", "v": "0.5"})
    for i in range(1, 4):
        r.xadd(stream, {"id": str(i), "v": str(i + 0.5)})
    src = {"type": "redis_stream", "url": redis_url, "stream": stream, "field": None, "startId": first.decode(),
           "idleTimeoutSeconds": 0.2}
    report = run(from_mapping(pipeline(tmp_path, src, sink="tfrecord")))
    rows = []
    for f in (tmp_path / "out").glob("*.tfrecord"):
        with open(f, "rb") as fh:
            rows += [json.loads(p) for p in iter_records(fh)]
    assert sorted((x["id"], x["v"]) for x in rows) == [(1, 1.5), (2, 2.5), (3, 3.5)]  # after startId, typed
    assert report.acked == {"s": 0}


async def _publish(url: str, stream: str, subject: str, payloads: list[bytes]) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        await js.stream_info(stream)
    except Exception:
        await js.add_stream(name=stream, subjects=[subject])
    for p in payloads:
        await js.publish(subject, p)
    await nc.close()


async def _consumer_state(url: str, stream: str, durable: str) -> tuple[int, int]:
    import nats

    nc = await nats.connect(url)
    info = await nc.jetstream().consumer_info(stream, durable)
    await nc.close()
    return info.num_pending, info.num_ack_pending


def test_nats_jetstream_pull_consumer_acks_after_commit(tmp_path: Path, nats_url: str) -> None:
    stream, subject = "EVENTS", "events.raw"
    good = [json.dumps({"id": i, "v": i * 1.5}).encode() for i in range(40)]
    asyncio.run(_publish(nats_url, stream, subject, [*good, b"not json", json.dumps({"id": "x", "v": 1}).encode()]))
    src = {"type": "nats_jetstream", "url": nats_url, "stream": stream, "subject": subject, "durable": "etl",
           "idleTimeoutSeconds": 0.5, "batch": 16}

    report = run(from_mapping(pipeline(tmp_path, src, "a")))
    assert ids(tmp_path / "a") == list(range(40))
    assert report.read == 42 and report.invalid == 2 and report.acked == {"s": 42}
    assert asyncio.run(_consumer_state(nats_url, stream, "etl")) == (0, 0)  # nothing left, nothing unacked

    asyncio.run(_publish(nats_url, stream, subject, [json.dumps({"id": 100 + i, "v": 0.0}).encode()
                                                     for i in range(5)]))
    again = run(from_mapping(pipeline(tmp_path, {**src, "maxRecords": 3}, "b")))
    assert ids(tmp_path / "b") == [100, 101, 102]  # bounded read, only what is new
    assert again.acked == {"s": 3}
    assert asyncio.run(_consumer_state(nats_url, stream, "etl")) == (2, 0)


def test_unreachable_stream_fails_clearly_and_commits_nothing(tmp_path: Path) -> None:
    from modelplane.data.errors import DataError
    from modelplane.data.localservers import free_port

    src = {"type": "redis_stream", "url": f"redis://127.0.0.1:{free_port()}/0", "stream": "x", "group": "g"}
    with pytest.raises(DataError) as err:
        run(from_mapping(pipeline(tmp_path, src)))
    assert "failed while running" in err.value.message and "onnect" in err.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no staging left behind
