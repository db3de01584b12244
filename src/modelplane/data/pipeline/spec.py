"""The pipeline definition a user writes in YAML, as typed models: bad input fails with its path.

A definition is ``sources`` (each validated against its ``schema`` or the top-level one), then
``transforms`` picked by name from the registry (``transforms.py``), then ``sinks``; every record that
fails a rule goes to ``dead_letter`` with the field and the rule. It is the body of a ``Pipeline``
manifest's ``spec.pipeline`` or a file of its own.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,62}$"
FieldType = Literal["str", "int", "float", "bool", "list", "dict", "any"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# ---- schema ----------------------------------------------------------------------------------------

class FieldRule(_Model):
    """JSON-Schema-like rules for one field. Checked in this order; the first failure is the reason."""

    type: FieldType = "any"
    required: bool = True
    nullable: bool = False
    min: float | None = Field(default=None, description="numbers: smallest allowed value")
    max: float | None = Field(default=None, description="numbers: largest allowed value")
    min_length: int | None = Field(default=None, ge=0, alias="minLength")
    max_length: int | None = Field(default=None, ge=0, alias="maxLength")
    pattern: str | None = Field(default=None, description="strings: a regular expression the whole value matches")
    enum: list[Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FieldRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {exc}") from None
        return self


class SchemaSpec(_Model):
    fields: Annotated[dict[str, FieldRule], Field(min_length=1)]
    extra: Literal["keep", "drop", "reject"] = Field(
        default="keep", description="fields not listed: keep them, drop them, or dead-letter the record")
    coerce: bool = Field(default=True, description="parse strings (CSV, Redis fields) into int/float/bool")


# ---- sources ---------------------------------------------------------------------------------------

class _Source(_Model):
    name: str = Field(pattern=NAME)
    schema_: SchemaSpec | None = Field(default=None, alias="schema", description="overrides the top-level schema")


class FileSource(_Source):
    type: Literal["files"]
    path: str = Field(min_length=1, description="path, glob or fsspec URL (s3://bucket/raw/*.jsonl)")
    format: Literal["jsonl", "csv"] | None = Field(default=None, description="default: from the extension")
    storage_options: dict[str, Any] = Field(default_factory=dict, alias="storageOptions")


class RedisStreamSource(_Source):
    type: Literal["redis_stream"]
    url: str = Field(pattern=r"^rediss?://", description="redis://host:port/db")
    stream: str = Field(min_length=1)
    group: str | None = Field(default=None, description="consumer group: XREADGROUP, acked after the sinks commit")
    consumer: str = "modelplane-pipeline"
    start_id: str = Field(default="0", alias="startId", description="without a group: read after this id")
    field: str | None = Field(default="data", description="entry field holding a JSON record; null: the entry's "
                              "fields are the record")
    max_records: int | None = Field(default=None, ge=1, alias="maxRecords")
    idle_timeout_s: float = Field(default=2.0, gt=0, alias="idleTimeoutSeconds")
    batch: int = Field(default=1000, ge=1, le=100_000)


class NatsSource(_Source):
    type: Literal["nats_jetstream"]
    url: str = Field(pattern=r"^(nats|tls)://")
    stream: str = Field(min_length=1)
    subject: str = Field(min_length=1)
    durable: str = Field(default="modelplane-pipeline", min_length=1)
    max_records: int | None = Field(default=None, ge=1, alias="maxRecords")
    idle_timeout_s: float = Field(default=2.0, gt=0, alias="idleTimeoutSeconds")
    batch: int = Field(default=500, ge=1, le=10_000)
    ack_wait_s: float = Field(default=600.0, gt=0, alias="ackWaitSeconds",
                              description="unacked messages are redelivered after this; longer than a run")


class KafkaSource(_Source):
    """Beam's cross-language ``ReadFromKafka``: needs Java and the Kafka expansion service."""

    type: Literal["kafka"]
    bootstrap_servers: str = Field(alias="bootstrapServers", min_length=1)
    topic: str = Field(min_length=1)
    max_records: int = Field(ge=1, alias="maxRecords", description="bounded read")
    expansion_service: str | None = Field(default=None, alias="expansionService",
                                          description="host:port of a running expansion service")
    consumer_config: dict[str, str] = Field(default_factory=dict, alias="consumerConfig")


Source = Annotated[FileSource | RedisStreamSource | NatsSource | KafkaSource, Field(discriminator="type")]


# ---- sinks -----------------------------------------------------------------------------------------

class SinkSpec(_Model):
    """A directory of shards, visible whole or not at all (staged next to it, then renamed)."""

    type: Literal["tfrecord", "parquet", "jsonl"]
    path: str = Field(min_length=1, description="local (or mounted) directory")
    mode: Literal["error", "overwrite"] = Field(default="error", description="when the directory exists")
    max_records_per_shard: int = Field(default=1_000_000, ge=1, alias="maxRecordsPerShard")
    name: str | None = Field(default=None, description="dataset name in lineage; default: the path")


class DeadLetterSpec(_Model):
    path: str = Field(min_length=1)
    format: Literal["jsonl", "parquet"] = "jsonl"
    mode: Literal["error", "overwrite"] = "error"


class LineageSpec(_Model):
    enabled: bool = True
    url: str | None = Field(default=None, description="lineage DB URL; default: $MODELPLANE_LINEAGE_URL")
    namespace: str = "modelplane"


class PipelineDef(_Model):
    name: str = Field(pattern=NAME)
    sources: Annotated[list[Source], Field(min_length=1)]
    schema_: SchemaSpec | None = Field(default=None, alias="schema")
    transforms: list[dict[str, Any]] = Field(default_factory=list, description="[{op: NAME, ...params}]")
    sinks: Annotated[list[SinkSpec], Field(min_length=1)]
    dead_letter: DeadLetterSpec = Field(alias="deadLetter")
    lineage: LineageSpec = Field(default_factory=LineageSpec)
    options: dict[str, Any] = Field(default_factory=dict, description="Beam pipeline options, e.g. "
                                    "{runner: FlinkRunner, flink_master: 'host:8081'}")

    @model_validator(mode="after")
    def _names(self) -> PipelineDef:
        names = [s.name for s in self.sources]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dup)}")
        paths = [s.path for s in self.sinks] + [self.dead_letter.path]
        if len(set(paths)) != len(paths):
            raise ValueError("every sink and the dead letter need their own path")
        return self
