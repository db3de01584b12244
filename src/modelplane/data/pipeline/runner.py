"""Compile a :class:`PipelineDef` into a Beam pipeline, run it, commit the sinks, ack, record lineage.

Order matters for at-least-once delivery: stream entries are acknowledged only after every sink and
the dead letter have been committed, so a run killed at any point leaves them to be read again.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelplane.data.errors import DataError
from modelplane.data.pipeline.lineage_run import record_run, resolve_url
from modelplane.data.pipeline.spec import NatsSource, PipelineDef, RedisStreamSource
from modelplane.data.pipeline.transforms import Join, Normalize, Transform, Union, parse

Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class RunReport:
    run_id: str
    pipeline: str
    counters: dict[str, int]
    sinks: dict[str, dict[str, Any]]
    dead_letter: dict[str, Any]
    acked: dict[str, int] = field(default_factory=dict)
    lineage_node: int | None = None
    seconds: float = 0.0

    @property
    def read(self) -> int:
        return sum(v for k, v in self.counters.items() if k.startswith("read."))

    @property
    def invalid(self) -> int:
        return sum(v for k, v in self.counters.items() if k.startswith("dead."))

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "pipeline": self.pipeline, "read": self.read, "invalid": self.invalid,
                "counters": self.counters, "sinks": self.sinks, "dead_letter": self.dead_letter,
                "acked": self.acked, "lineage_node": self.lineage_node, "seconds": round(self.seconds, 3)}


def _plan(defn: PipelineDef) -> tuple[list[Transform], list[Transform]]:
    """Split transforms into the combine step (several sources) and the per-record rest."""
    steps = parse(defn.transforms)
    names = [s.name for s in defn.sources]
    if len(names) == 1:
        for i, t in enumerate(steps):
            if t.combines_sources:
                raise DataError(f"transforms.{i}.op: {t.name} needs several sources; this pipeline has one.",
                                field=f"transforms.{i}.op", hint="Remove the step or add sources.")
        return [], steps
    if not steps or not steps[0].combines_sources:
        raise DataError(f"{len(names)} sources need a join or union as the first transform.", field="transforms.0",
                        hint=f"e.g. {{op: union, sources: {names}}} or {{op: join, sources: {names}, key: id}}.")
    first = steps[0].params
    used = list(first.sources)  # type: ignore[attr-defined]
    unknown = [n for n in used if n not in names]
    if unknown or sorted(used) != sorted(names):
        missing = sorted(set(names) - set(used))
        raise DataError(f"transforms.0.sources must name every source once: unknown {unknown}, missing {missing}.",
                        field="transforms.0.sources", hint=f"The sources are {names}.")
    for i, t in enumerate(steps[1:], start=1):
        if t.combines_sources:
            raise DataError(f"transforms.{i}.op: only the first step may join or union sources.",
                            field=f"transforms.{i}.op")
    return steps[:1], steps[1:]


def _options(defn: PipelineDef, beam_args: Sequence[str]) -> Any:
    from apache_beam.options.pipeline_options import PipelineOptions

    opts = dict(defn.options)
    if any(a.startswith("--runner") for a in beam_args):
        opts.pop("runner", None)  # the command line wins over the spec
    else:
        opts.setdefault("runner", "DirectRunner")
    return PipelineOptions(flags=list(beam_args), **opts)


def run(defn: PipelineDef, *, lineage_url: str | None = None, beam_args: Sequence[str] = (),
        progress: Progress | None = None) -> RunReport:
    """Run the pipeline to completion; raises DataError for bad specs before any record is read."""
    from modelplane.data.pipeline import combine, sinks, sources
    from modelplane.data.pipeline.beam import beam
    from modelplane.data.pipeline.steps import RunSteps, Step

    say = progress or (lambda _phase, _info: None)
    t0 = time.monotonic()
    run_id = uuid.uuid4().hex[:12]
    url = resolve_url(defn.lineage, lineage_url)
    combine_steps, record_steps = _plan(defn)
    for i, s in enumerate(defn.sinks):
        sinks.check_target(s.path, s.mode, f"sinks.{i}.path")
    sinks.check_target(defn.dead_letter.path, defn.dead_letter.mode, "deadLetter.path")
    stage = {s.path: sinks.staging_dir(s.path, run_id) for s in defn.sinks}
    dl_stage = sinks.staging_dir(defn.dead_letter.path, run_id)
    ack_stage = dl_stage.parent / f".{defn.name}.acks-{run_id}"

    say("compile", {"run_id": run_id})
    p = beam.Pipeline(options=_options(defn, beam_args))
    parts: dict[str, Any] = {}
    dead: list[Any] = []
    acks: list[Any] = []
    for i, src in enumerate(defn.sources):
        read = sources.read_source(p, src, i)
        dead.append(read[sources.DEAD])
        acks.append(read[sources.ACK] | f"ack:{src.name}" >> beam.Map(lambda t, n=src.name: {"source": n, "t": t}))
        schema = src.schema_ or defn.schema_
        # A single source runs its record transforms in the same DoFn as its validation.
        chain = [Step("validate", schema=schema)]
        if len(defn.sources) == 1:
            chain += _take_record_steps(record_steps)
        out = read.records | f"validate:{src.name}" >> beam.ParDo(RunSteps(src.name, chain)).with_outputs(
            sources.DEAD, main="ok")
        parts[src.name] = out.ok
        dead.append(out[sources.DEAD])

    if combine_steps:
        step = combine_steps[0]
        if isinstance(step, Join):
            current, join_dead = combine.join(parts, step.params, "join")  # type: ignore[arg-type]
            dead += join_dead
        else:
            assert isinstance(step, Union)
            current = combine.union(parts, step.params, "union")  # type: ignore[arg-type]
    else:
        current = parts[defn.sources[0].name]

    n = 0
    while record_steps:
        head = record_steps[0]
        if isinstance(head, Normalize) and head.record_fn() is None:
            record_steps.pop(0)
            current, nd = combine.normalize_from_data(current, head.params, f"normalize{n}")  # type: ignore[arg-type]
            dead.append(nd)
        else:
            chain = _take_record_steps(record_steps)
            out = current | f"transform{n}" >> beam.ParDo(RunSteps("", chain)).with_outputs(sources.DEAD, main="ok")
            current = out.ok
            dead.append(out[sources.DEAD])
        n += 1

    for i, s in enumerate(defn.sinks):
        _ = current | f"sink{i}:{s.type}" >> beam.ParDo(
            sinks.WriteShards(str(stage[s.path]), s.type, s.max_records_per_shard, f"written.sink{i}"))
    _ = (tuple(dead) | "dead:flatten" >> beam.Flatten()
         | "dead:write" >> beam.ParDo(sinks.WriteShards(str(dl_stage), defn.dead_letter.format, 1_000_000,
                                                        "written.dead_letter")))
    _ = (tuple(acks) | "ack:flatten" >> beam.Flatten()
         | "ack:write" >> beam.ParDo(sinks.WriteShards(str(ack_stage), "jsonl", 1_000_000, "acks")))

    say("run", {"runner": p.options.view_as(beam.options.pipeline_options.StandardOptions).runner})
    try:
        result = p.run()
        result.wait_until_finish()
    except DataError:
        raise
    except Exception as exc:
        for d in [*stage.values(), dl_stage, ack_stage]:
            shutil.rmtree(d, ignore_errors=True)
        # Failures inside a DoFn arrive wrapped by the runner; keep the cause readable.
        raise DataError(f"pipeline {defn.name} failed while running: {_root_cause(exc)}", field="pipeline",
                        hint="Nothing was committed or acknowledged; fix the cause and rerun.") from exc
    counters = _counters(result)

    say("commit", {"counters": counters})
    meta = {"pipeline": defn.name, "run_id": run_id}
    sink_report = {}
    for i, s in enumerate(defn.sinks):
        man = sinks.commit(stage[s.path], s.path, s.mode,
                           {**meta, "format": s.type, "records": counters.get(f"written.sink{i}", 0)})
        sink_report[s.path] = {"format": s.type, "records": man["records"], "files": len(man["files"])}
    dl = defn.dead_letter
    man = sinks.commit(dl_stage, dl.path, dl.mode,
                       {**meta, "format": dl.format, "records": counters.get("written.dead_letter", 0)})
    dl_report = {"path": dl.path, "records": man["records"], "files": len(man["files"])}

    say("ack", {})
    acked = _ack(defn, ack_stage)
    shutil.rmtree(ack_stage, ignore_errors=True)

    node = None
    if url is not None:
        say("lineage", {"url": url.split("@")[-1]})
        from modelplane.data.pipeline.sources import dataset_id

        outputs = [("file", str(Path(s.path).absolute())) if not s.name else ("file", s.name) for s in defn.sinks]
        outputs.append(("file", str(Path(dl.path).absolute())))
        node = record_run(url, job=defn.name, namespace=defn.lineage.namespace, run_id=_uuid(run_id),
                          inputs=[dataset_id(s) for s in defn.sources], outputs=outputs)
    report = RunReport(run_id, defn.name, counters, sink_report, dl_report, acked, node, time.monotonic() - t0)
    say("done", report.to_dict())
    return report


def _take_record_steps(steps: list[Transform]) -> list[Any]:
    """Pop the leading run of per-record transforms as fused Steps."""
    from modelplane.data.pipeline.steps import Step

    chain = []
    while steps and steps[0].record_fn() is not None:
        t = steps.pop(0)
        chain.append(Step(f"{t.name}", transform=t))
    return chain


def _counters(result: Any) -> dict[str, int]:
    from apache_beam.metrics.metric import MetricsFilter

    out: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace("modelplane"))["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(value or 0)
    return dict(sorted(out.items()))


def _ack(defn: PipelineDef, ack_dir: Path) -> dict[str, int]:
    from modelplane.data.pipeline.sources import ack_nats, ack_redis

    tokens: dict[str, list[str]] = {}
    if ack_dir.exists():
        for f in sorted(ack_dir.glob("*.jsonl")):
            for line in f.read_text().splitlines():
                row = json.loads(line)
                tokens.setdefault(row["source"], []).extend(row["t"])
    acked = {}
    for src in defn.sources:
        got = tokens.get(src.name, [])
        if isinstance(src, RedisStreamSource):
            acked[src.name] = ack_redis(src, got)
        elif isinstance(src, NatsSource):
            acked[src.name] = ack_nats(src, got)
    return acked


def _uuid(run_id: str) -> str:
    return str(uuid.UUID(run_id.ljust(32, "0")))


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
