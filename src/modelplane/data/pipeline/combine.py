"""Steps that need more than one record at a time: join and union of sources, normalize with
statistics computed from the data (one extra pass, given to the records as a side input).

Like every main collection in a compiled pipeline, inputs and outputs are batches (lists) of records.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

from modelplane.data.pipeline.beam import beam
from modelplane.data.pipeline.schema import RecordError
from modelplane.data.pipeline.sources import DEAD, dead_row
from modelplane.data.pipeline.transforms import JoinParams, NormalizeParams, UnionParams, normalizer


class KeyBy(beam.DoFn):  # type: ignore[misc]
    def __init__(self, source: str, key: str) -> None:
        self.source, self.key = source, key

    def setup(self) -> None:
        self.dead = beam.metrics.Metrics.counter("modelplane", f"dead.{self.source}.join")

    def process(self, batch: list[dict[str, Any]]) -> Iterator[Any]:
        for rec in batch:
            k = rec.get(self.key)
            if k is None or isinstance(k, list | dict):
                reason = f"join key {self.key} is missing" if k is None else f"join key {self.key} is not a scalar"
                self.dead.inc()
                yield beam.pvalue.TaggedOutput(DEAD, dead_row(self.source, "join", self.key, "join_key", reason, rec))
                continue
            yield k, rec


class MergeJoined(beam.DoFn):  # type: ignore[misc]
    """One output per combination of matching records; a clashing field becomes ``<source>_<field>``."""

    def __init__(self, order: list[str], key: str, how: str) -> None:
        self.order, self.key, self.how = order, key, how

    def setup(self) -> None:
        self.unmatched = beam.metrics.Metrics.counter("modelplane", "join.unmatched")

    def process(self, item: tuple[Any, dict[str, list[dict[str, Any]]]]) -> Iterator[list[dict[str, Any]]]:
        _, groups = item
        lists = [(name, list(groups.get(name, []))) for name in self.order]
        present = [(n, rows) for n, rows in lists if rows]
        complete = len(present) == len(lists)
        if not complete and (self.how == "inner" or (self.how == "left" and not lists[0][1])):
            self.unmatched.inc(sum(len(rows) for _, rows in present))
            return
        names = [n for n, _ in present]
        batch = []
        for combo in itertools.product(*(rows for _, rows in present)):
            out: dict[str, Any] = {}
            for name, rec in zip(names, combo, strict=True):
                for f, v in rec.items():
                    if f == self.key or f not in out:
                        out[f] = v
                    else:
                        out[f"{name}_{f}"] = v
            batch.append(out)
        yield batch


def join(parts: dict[str, Any], params: JoinParams, label: str) -> tuple[Any, list[Any]]:
    keyed, dead = {}, []
    for name in params.sources:
        out = parts[name] | f"{label}:key:{name}" >> beam.ParDo(KeyBy(name, params.key)).with_outputs(DEAD, main="ok")
        keyed[name] = out.ok
        dead.append(out[DEAD])
    joined = (keyed | f"{label}:group" >> beam.CoGroupByKey()
                    | f"{label}:merge" >> beam.ParDo(MergeJoined(list(params.sources), params.key, params.how)))
    return joined, dead


def union(parts: dict[str, Any], params: UnionParams, label: str) -> Any:
    tagged = []
    for name in params.sources:
        pc = parts[name]
        if params.tag:
            tag = params.tag
            pc = pc | f"{label}:tag:{name}" >> beam.Map(lambda b, n=name, t=tag: [{**r, t: n} for r in b])
        tagged.append(pc)
    return tuple(tagged) | f"{label}:flatten" >> beam.Flatten()


class Moments(beam.CombineFn):  # type: ignore[misc]
    """Per field: count, sum, sum of squares, min, max of numeric values (others are skipped here and
    dead-lettered by the normalize step)."""

    def __init__(self, fields: list[str]) -> None:
        self.fields = fields

    def create_accumulator(self) -> dict[str, list[float]]:
        return {f: [0, 0.0, 0.0, math.inf, -math.inf] for f in self.fields}

    def add_input(self, acc: dict[str, list[float]], batch: list[dict[str, Any]]) -> dict[str, list[float]]:
        for f, a in acc.items():
            for rec in batch:
                v = rec.get(f)
                if isinstance(v, int | float) and not isinstance(v, bool):
                    a[0] += 1
                    a[1] += v
                    a[2] += v * v
                    a[3] = min(a[3], v)
                    a[4] = max(a[4], v)
        return acc

    def merge_accumulators(self, accs: Any) -> dict[str, list[float]]:
        out = self.create_accumulator()
        for acc in accs:
            for f, a in acc.items():
                o = out[f]
                o[0] += a[0]
                o[1] += a[1]
                o[2] += a[2]
                o[3] = min(o[3], a[3])
                o[4] = max(o[4], a[4])
        return out

    def extract_output(self, acc: dict[str, list[float]]) -> dict[str, list[float]]:
        return acc


class ApplyNormalize(beam.DoFn):  # type: ignore[misc]
    def __init__(self, params: NormalizeParams, stage: str) -> None:
        self.params, self.stage = params, stage
        self._fn: Any = None

    def setup(self) -> None:
        self.dead = beam.metrics.Metrics.counter("modelplane", f"dead.{self.stage}")

    def process(self, batch: list[dict[str, Any]], moments: dict[str, list[float]]) -> Iterator[Any]:
        if self._fn is None:
            stats = {}
            for f, (n, s, s2, lo, hi) in moments.items():
                if self.params.method == "minmax":
                    stats[f] = (lo, hi) if n else (0.0, 0.0)
                else:
                    mean = s / n if n else 0.0
                    stats[f] = (mean, math.sqrt(max(0.0, s2 / n - mean * mean)) if n else 0.0)
            self._fn = normalizer(self.params.fields, self.params.method, stats)
        out = []
        for rec in batch:
            try:
                out.append(self._fn(rec))
            except RecordError as e:
                self.dead.inc()
                yield beam.pvalue.TaggedOutput(DEAD, dead_row("", self.stage, e.field, e.rule, e.message, rec))
        if out:
            yield out


def normalize_from_data(pcoll: Any, params: NormalizeParams, label: str) -> tuple[Any, Any]:
    moments = pcoll | f"{label}:stats" >> beam.CombineGlobally(Moments(params.fields))
    out = pcoll | f"{label}:apply" >> beam.ParDo(ApplyNormalize(params, label),
                                                 beam.pvalue.AsSingleton(moments)).with_outputs(DEAD, main="ok")
    return out.ok, out[DEAD]
