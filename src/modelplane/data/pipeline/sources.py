"""Bounded sources as Beam transforms: files (any fsspec URL), Redis Streams, NATS JetStream, Kafka.

Every reader has three outputs: batches of records (main: lists, so per-element overhead in Beam's
Python runners is paid once per batch), ``dead`` (lines that do not parse, with the reason) and
``ack`` (lists of what to acknowledge once the sinks have committed: Redis entry ids, JetStream
reply subjects). Stream reads stop at ``maxRecords`` or after ``idleTimeoutSeconds`` without a message, so
the pipeline is a bounded batch job that can be rerun; unacknowledged entries are read again.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from modelplane.data._deps import require
from modelplane.data.errors import DataError
from modelplane.data.pipeline.beam import beam
from modelplane.data.pipeline.spec import FileSource, KafkaSource, NatsSource, RedisStreamSource

DEAD, ACK = "dead", "ack"
BATCH = 1000


def dead_row(source: str, stage: str, field: str, rule: str, reason: str, record: Any) -> dict[str, Any]:
    raw = record if isinstance(record, str) else json.dumps(record, default=str, sort_keys=True)
    return {"source": source, "stage": stage, "field": field, "rule": rule, "reason": reason, "record": raw}


def dataset_id(src: FileSource | RedisStreamSource | NatsSource | KafkaSource) -> tuple[str, str]:
    """OpenLineage (namespace, name) of a source, following the OpenLineage naming conventions."""
    if isinstance(src, FileSource):
        if "://" in src.path and not src.path.startswith("file://"):
            proto, rest = src.path.split("://", 1)
            bucket, _, key = rest.partition("/")
            return f"{proto}://{bucket}", key
        import os

        return "file", os.path.abspath(src.path.removeprefix("file://"))
    if isinstance(src, RedisStreamSource):
        from urllib.parse import urlparse

        u = urlparse(src.url)
        return f"{u.scheme}://{u.hostname}:{u.port or 6379}", src.stream
    if isinstance(src, NatsSource):
        return src.url, f"{src.stream}/{src.subject}"
    return f"kafka://{src.bootstrap_servers.split(',')[0]}", src.topic


# ---- files -----------------------------------------------------------------------------------------

def expand_files(src: FileSource, index: int) -> list[str]:
    fsspec = require("fsspec")
    try:
        fs, _, paths = fsspec.core.get_fs_token_paths(src.path, mode="rb", storage_options=src.storage_options,
                                                       expand=True)
    except (OSError, ValueError) as exc:
        raise DataError(f"sources.{index}.path: cannot list {src.path!r} ({exc}).", field=f"sources.{index}.path",
                        hint="Check the path or URL and storageOptions.") from None
    files = sorted(p for p in paths if not fs.isdir(p))
    if not files:
        raise DataError(f"sources.{index}.path: {src.path!r} matches no file.", field=f"sources.{index}.path",
                        hint="Check the path or glob; a source must read something.")
    return [fs.unstrip_protocol(p) for p in files]


def file_format(src: FileSource, url: str) -> str:
    if src.format:
        return src.format
    name = url.lower().removesuffix(".gz").removesuffix(".zst").removesuffix(".bz2")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise DataError(f"source {src.name}: cannot tell the format of {url}.", field="format",
                    hint="Set format: jsonl or format: csv on the source.")


class _SourceReader(beam.DoFn):  # type: ignore[misc]
    """A reader of one source, with its read and parse-failure counters (Beam metrics)."""

    def __init__(self, src: Any) -> None:
        self.src = src

    def setup(self) -> None:
        self.read = beam.metrics.Metrics.counter("modelplane", f"read.{self.src.name}")
        self.bad = beam.metrics.Metrics.counter("modelplane", f"dead.{self.src.name}.parse")


class ReadFiles(_SourceReader):
    src: FileSource

    def process(self, url: str) -> Iterator[Any]:
        fsspec = require("fsspec")
        fmt = file_format(self.src, url)
        name = self.src.name
        from fsspec.compression import compr
        from fsspec.utils import infer_compression

        from modelplane.data.sensitive import decrypting

        with fsspec.open(url, "rb", **self.src.storage_options) as raw:
            # A sensitive dataset's file is decrypted with the key the control plane releases to
            # this (confidential) job; compression applies to the plaintext.
            stream = decrypting(raw, url)
            codec = infer_compression(url)
            text = io.TextIOWrapper(compr[codec](stream, mode="rb") if codec else stream, encoding="utf-8", newline="")
            batch: list[Any] = []
            if fmt == "csv":
                reader = csv.DictReader(text)
                for n, row in enumerate(reader, start=2):
                    if None in row:  # more cells than header columns
                        self.bad.inc()
                        yield beam.pvalue.TaggedOutput(DEAD, dead_row(
                            name, "parse", "", "csv", f"{url}:{n}: more cells than the header has columns",
                            json.dumps(row.pop(None))))
                        self.read.inc()
                        continue
                    batch.append(row)
                    if len(batch) >= BATCH:
                        self.read.inc(len(batch))
                        yield batch
                        batch = []
            else:
                loads = json.loads
                for n, line in enumerate(text, start=1):
                    if not line.strip():
                        continue
                    try:
                        batch.append(loads(line))
                    except ValueError as exc:
                        self.bad.inc()
                        self.read.inc()
                        yield beam.pvalue.TaggedOutput(DEAD, dead_row(name, "parse", "", "json", f"{url}:{n}: {exc}",
                                                                      line.rstrip("\n")))
                        continue
                    if len(batch) >= BATCH:
                        self.read.inc(len(batch))
                        yield batch
                        batch = []
            if batch:
                self.read.inc(len(batch))
                yield batch


def read_files(p: Any, src: FileSource, index: int) -> Any:
    urls = expand_files(src, index)
    return (p | f"list:{src.name}" >> beam.Create(urls)
              | f"read:{src.name}" >> beam.ParDo(ReadFiles(src)).with_outputs(DEAD, ACK, main="records"))


# ---- Redis Streams ---------------------------------------------------------------------------------

class ReadRedisStream(_SourceReader):
    """XREADGROUP (own pending entries first, then new ones) or XREAD, until the bound is reached."""

    src: RedisStreamSource

    def process(self, _: Any) -> Iterator[Any]:
        redis = require("redis")
        s = self.src
        r = redis.Redis.from_url(s.url, decode_responses=True)
        try:
            if s.group:
                try:
                    r.xgroup_create(s.stream, s.group, id="0", mkstream=True)
                except redis.ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            remaining = s.max_records or -1
            cursor, pending = (("0", True) if s.group else (s.start_id, False))
            block_ms = max(1, int(s.idle_timeout_s * 1000))
            while remaining != 0:
                count = s.batch if remaining < 0 else min(s.batch, remaining)
                if s.group:
                    resp = r.xreadgroup(s.group, s.consumer, {s.stream: cursor}, count=count,
                                        block=None if pending else block_ms)
                else:
                    resp = r.xread({s.stream: cursor}, count=count, block=block_ms)
                entries = resp[0][1] if resp else []
                if not entries:
                    if pending:  # our own unacknowledged entries are done: now new ones
                        cursor, pending = ">", False
                        continue
                    return
                if pending or not s.group:
                    cursor = entries[-1][0]
                remaining -= len(entries)
                self.read.inc(len(entries))
                if s.group:
                    yield beam.pvalue.TaggedOutput(ACK, [e[0] for e in entries])
                batch = []
                for entry_id, fields in entries:
                    rec = self._record(entry_id, fields)
                    if isinstance(rec, beam.pvalue.TaggedOutput):
                        yield rec
                    else:
                        batch.append(rec)
                if batch:
                    yield batch
        finally:
            r.close()

    def _record(self, entry_id: str, fields: dict[str, str]) -> Any:
        if self.src.field is None:
            return fields
        raw = fields.get(self.src.field)
        try:
            if raw is None:
                raise ValueError(f"entry has no field {self.src.field!r}")
            return json.loads(raw)
        except ValueError as exc:
            self.bad.inc()
            return beam.pvalue.TaggedOutput(DEAD, dead_row(self.src.name, "parse", self.src.field, "json",
                                                           f"entry {entry_id}: {exc}", fields))


def read_redis(p: Any, src: RedisStreamSource) -> Any:
    return (p | f"start:{src.name}" >> beam.Create([None])
              | f"read:{src.name}" >> beam.ParDo(ReadRedisStream(src)).with_outputs(DEAD, ACK, main="records"))


def ack_redis(src: RedisStreamSource, ids: list[str]) -> int:
    if not src.group or not ids:
        return 0
    redis = require("redis")
    r = redis.Redis.from_url(src.url)
    try:
        done = 0
        for i in range(0, len(ids), 10_000):
            done += int(r.xack(src.stream, src.group, *ids[i:i + 10_000]))
        return done
    finally:
        r.close()


# ---- NATS JetStream --------------------------------------------------------------------------------

class ReadNats(_SourceReader):
    """A durable pull consumer with explicit acks; messages are acked by the driver after the commit."""

    src: NatsSource

    def process(self, _: Any) -> Iterator[Any]:
        nats = require("nats", package="nats-py")
        api = require("nats.js.api", package="nats-py")
        errors = require("nats.errors", package="nats-py")
        s = self.src
        loop = asyncio.new_event_loop()
        nc = None
        try:
            nc = loop.run_until_complete(nats.connect(s.url, connect_timeout=5, max_reconnect_attempts=2))
            cfg = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, ack_wait=s.ack_wait_s, max_ack_pending=-1)
            sub = loop.run_until_complete(nc.jetstream().pull_subscribe(s.subject, durable=s.durable,
                                                                         stream=s.stream, config=cfg))
            remaining = s.max_records or -1
            while remaining != 0:
                count = s.batch if remaining < 0 else min(s.batch, remaining)
                try:
                    msgs = loop.run_until_complete(sub.fetch(count, timeout=s.idle_timeout_s))
                except errors.TimeoutError:
                    break
                remaining -= len(msgs)
                self.read.inc(len(msgs))
                yield beam.pvalue.TaggedOutput(ACK, [m.reply for m in msgs])
                batch = []
                for msg in msgs:
                    try:
                        batch.append(json.loads(msg.data))
                    except ValueError as exc:
                        self.bad.inc()
                        yield beam.pvalue.TaggedOutput(DEAD, dead_row(
                            s.name, "parse", "", "json", f"{msg.subject} seq {msg.metadata.sequence.stream}: {exc}",
                            msg.data.decode("utf-8", "replace")))
                if batch:
                    yield batch
        finally:
            if nc is not None:
                loop.run_until_complete(nc.close())
            loop.close()


def read_nats(p: Any, src: NatsSource) -> Any:
    return (p | f"start:{src.name}" >> beam.Create([None])
              | f"read:{src.name}" >> beam.ParDo(ReadNats(src)).with_outputs(DEAD, ACK, main="records"))


def ack_nats(src: NatsSource, replies: list[str]) -> int:
    """A JetStream ack is a publish of ``+ACK`` to the message's reply subject, from any connection."""
    if not replies:
        return 0
    nats = require("nats", package="nats-py")

    async def go() -> None:
        nc = await nats.connect(src.url, connect_timeout=5)
        for subject in replies:
            await nc.publish(subject, b"+ACK")
        await nc.flush()
        await nc.close()

    asyncio.run(go())
    return len(replies)


# ---- Kafka -----------------------------------------------------------------------------------------

class ParseKafka(beam.DoFn):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        self.name = name

    def process(self, kv: tuple[bytes | None, bytes]) -> Iterator[Any]:
        try:
            yield [json.loads(kv[1])]
        except ValueError as exc:
            yield beam.pvalue.TaggedOutput(DEAD, dead_row(self.name, "parse", "", "json", str(exc),
                                                          kv[1].decode("utf-8", "replace")))


def read_kafka(p: Any, src: KafkaSource) -> Any:
    """Beam's Java ``KafkaIO`` through the cross-language expansion service (Java needed; not run here)."""
    from apache_beam.io.kafka import ReadFromKafka

    kwargs: dict[str, Any] = {"expansion_service": src.expansion_service} if src.expansion_service else {}
    return (p | f"read:{src.name}" >> ReadFromKafka(
                consumer_config={"bootstrap.servers": src.bootstrap_servers, **src.consumer_config},
                topics=[src.topic], max_num_records=src.max_records, **kwargs)
              | f"parse:{src.name}" >> beam.ParDo(ParseKafka(src.name)).with_outputs(DEAD, ACK, main="records"))


def read_source(p: Any, src: FileSource | RedisStreamSource | NatsSource | KafkaSource, index: int) -> Any:
    if isinstance(src, FileSource):
        return read_files(p, src, index)
    if isinstance(src, RedisStreamSource):
        return read_redis(p, src)
    if isinstance(src, NatsSource):
        return read_nats(p, src)
    return read_kafka(p, src)
