"""Validation and consecutive record transforms fused into one ``ParDo`` with a dead-letter output.

Per-element overhead in Beam's Python runners is several microseconds per DoFn call, so a chain of
record functions runs inside one DoFn, over a batch (a list of records) per element. The functions are built in ``setup`` on the worker from the
(picklable) specs rather than pickled as closures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from modelplane.data.pipeline.beam import beam
from modelplane.data.pipeline.schema import RecordError, compile_schema
from modelplane.data.pipeline.sources import DEAD, dead_row
from modelplane.data.pipeline.spec import SchemaSpec
from modelplane.data.pipeline.transforms import RecordFn, Transform


class Step:
    """A named stage that builds its record function on the worker."""

    def __init__(self, stage: str, schema: SchemaSpec | None = None, transform: Transform | None = None,
                 fn: Callable[[], RecordFn] | None = None) -> None:
        self.stage, self.schema, self.transform, self.fn = stage, schema, transform, fn

    def build(self) -> RecordFn:
        if self.fn is not None:
            return self.fn()
        if self.transform is not None:
            built = self.transform.record_fn()
            assert built is not None
            return built
        return compile_schema(self.schema)


class RunSteps(beam.DoFn):  # type: ignore[misc]
    def __init__(self, source: str, steps: list[Step]) -> None:
        self.source, self.steps = source, steps

    def setup(self) -> None:
        m = beam.metrics.Metrics
        self._fns = [(s.stage, s.build()) for s in self.steps]
        self._dead = {s.stage: m.counter("modelplane", f"dead.{self.source}.{s.stage}") for s in self.steps}
        self._filtered = {s.stage: m.counter("modelplane", f"filtered.{s.stage}") for s in self.steps}

    def process(self, batch: list[Any]) -> Iterator[Any]:
        out = []
        for rec in batch:
            r = rec
            for stage, fn in self._fns:
                try:
                    r = fn(r)
                except RecordError as e:
                    self._dead[stage].inc()
                    yield beam.pvalue.TaggedOutput(DEAD, dead_row(self.source, stage, e.field, e.rule, e.message, r))
                    break
                if r is None:
                    self._filtered[stage].inc()
                    break
            else:
                out.append(r)
        if out:
            yield out
