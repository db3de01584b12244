"""Records/s of a validate -> features -> TFRecord pipeline on Beam's DirectRunner (FnApiRunner),
side by side with a plain-Python loop doing the same work with the same functions, and of the same
pipeline reading a Redis Stream (XREADGROUP, acked after commit) against a plain XREADGROUP loop.

Input: synthetic JSONL records (id, user, cat, score, text) with 1% out-of-range scores that go to
the dead letter. Features: tokenize(text) hashed into 2^18 buckets, hash_features(user, cat),
normalize(score) with given statistics. Output: TFRecord shards (masked CRC32C, google-crc32c) plus
the JSONL dead letter. Anchor (issue #8): about 10k records/s for such a pipeline on the FnApiRunner.

    PYTHONPATH=src .venv/bin/python benchmarks/pipeline.py [--records 1000000] [--redis-records 200000]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelplane.data.localservers import redis_server
from modelplane.data.pipeline import from_mapping
from modelplane.data.pipeline.runner import run
from modelplane.data.pipeline.schema import RecordError, compile_schema
from modelplane.data.pipeline.spec import SchemaSpec
from modelplane.data.pipeline.transforms import parse
from modelplane.data.tfrecord import encode_record

SCHEMA = {"extra": "drop", "fields": {
    "id": {"type": "int", "min": 0}, "user": {"type": "str"}, "cat": {"type": "str", "enum": list("abcdefgh")},
    "score": {"type": "float", "min": 0, "max": 1}, "text": {"type": "str", "maxLength": 1000}}}
TRANSFORMS = [{"op": "tokenize", "field": "text"}, {"op": "hash_features", "fields": ["user", "cat"]},
              {"op": "normalize", "fields": ["score"], "stats": {"score": [0.5, 0.29]}}]
WORDS = ["the", "a", "model", "data", "train", "serve", "shard", "token", "record", "pipeline", "beam", "stream",
         "cache", "lineage"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_record(rng: random.Random, i: int) -> dict[str, Any]:
    return {"id": i, "user": f"u{rng.randrange(10_000)}", "cat": rng.choice("abcdefgh"),
            "score": rng.random() * (1.5 if rng.random() < 0.02 else 1.0),
            "text": " ".join(rng.choices(WORDS, k=rng.randint(4, 12)))}


def make_input(path: Path, n: int) -> None:
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps(make_record(rng, i)) + "\n")


def spec(source: dict[str, Any], out: Path) -> dict[str, Any]:
    return {"name": "bench", "sources": [{"name": "in", **source}], "schema": SCHEMA, "transforms": TRANSFORMS,
            "sinks": [{"type": "tfrecord", "path": str(out / "tf"), "maxRecordsPerShard": 250_000}],
            "deadLetter": {"path": str(out / "dead")}, "lineage": {"enabled": False},
            "options": {"runner": "DirectRunner", "direct_running_mode": "in_memory"}}


def plain_work() -> Any:
    """The pipeline's per-record work as one function: validate, the three transforms, frame."""
    validate = compile_schema(SchemaSpec.model_validate(SCHEMA))
    fns = [t.record_fn() for t in parse(TRANSFORMS)]

    def work(rec: Any, tf: Any, dead: Any) -> None:
        try:
            r = validate(rec)
            for fn in fns:
                r = fn(r)  # type: ignore[misc]
        except RecordError as e:
            dead.write(json.dumps({"field": e.field, "rule": e.rule, "reason": e.message,
                                   "record": json.dumps(rec)}).encode() + b"\n")
            return
        tf.write(encode_record(json.dumps(r, separators=(",", ":")).encode()))
    return work


def plain_files(path: Path, out: Path) -> tuple[int, float]:
    out.mkdir(parents=True)
    work = plain_work()
    t0 = time.perf_counter()
    n = 0
    with open(path) as f, open(out / "part.tfrecord", "wb") as tf, open(out / "dead.jsonl", "wb") as dead:
        for line in f:
            work(json.loads(line), tf, dead)
            n += 1
    return n, time.perf_counter() - t0


def beam_run(d: dict[str, Any]) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    report = run(from_mapping(d))
    return report.read, report.sinks[d["sinks"][0]["path"]]["records"], time.perf_counter() - t0


def fill_stream(url: str, stream: str, n: int) -> None:
    import redis

    r = redis.Redis.from_url(url)
    rng = random.Random(1)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {"data": json.dumps(make_record(rng, i))})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    r.close()


def plain_redis(url: str, stream: str, out: Path) -> tuple[int, float]:
    import redis

    out.mkdir(parents=True)
    r = redis.Redis.from_url(url, decode_responses=True)
    r.xgroup_create(stream, "plain", id="0")
    work = plain_work()
    t0 = time.perf_counter()
    n = 0
    with open(out / "part.tfrecord", "wb") as tf, open(out / "dead.jsonl", "wb") as dead:
        while True:
            resp = r.xreadgroup("plain", "c", {stream: ">"}, count=1000, block=200)
            if not resp or not resp[0][1]:
                break
            ids = []
            for entry_id, fields in resp[0][1]:
                work(json.loads(fields["data"]), tf, dead)
                ids.append(entry_id)
            r.xack(stream, "plain", *ids)
            n += len(ids)
    r.close()
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--redis-records", type=int, default=200_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    result: dict[str, Any] = {"benchmark": "pipeline", "runner": "DirectRunner (FnApiRunner, in_memory)",
                              "anchor_records_per_s": 10_000}
    try:
        src = tmp / "in.jsonl"
        log(f"writing {args.records} records")
        make_input(src, args.records)
        log("plain-Python loop")
        n, secs = plain_files(src, tmp / "plain")
        plain_rps = n / secs
        log(f"  {plain_rps:,.0f} rec/s; Beam pipeline")
        read, written, bsecs = beam_run(spec({"type": "files", "path": str(src)}, tmp / "beam"))
        assert read == n
        beam_rps = read / bsecs
        result["files"] = {"records": read, "written": written, "dead_letter": read - written,
                           "beam_records_per_s": round(beam_rps), "beam_seconds": round(bsecs, 2),
                           "plain_python_records_per_s": round(plain_rps), "plain_seconds": round(secs, 2),
                           "beam_over_plain": round(beam_rps / plain_rps, 3),
                           "beam_over_anchor": round(beam_rps / 10_000, 3)}
        log(json.dumps(result["files"]))

        with redis_server(tmp / "redis", maxmemory="2gb") as url:
            m = args.redis_records
            log(f"filling two Redis streams with {m} entries each")
            fill_stream(url, "bench-beam", m)
            fill_stream(url, "bench-plain", m)
            rn, rsecs = plain_redis(url, "bench-plain", tmp / "plain-redis")
            rread, rwritten, rbsecs = beam_run(spec({"type": "redis_stream", "url": url, "stream": "bench-beam",
                                                     "group": "beam", "idleTimeoutSeconds": 0.2},
                                                    tmp / "beam-redis"))
            assert rread == m == rn
            result["redis_stream"] = {
                "records": rread, "written": rwritten, "beam_records_per_s": round(rread / rbsecs),
                "beam_seconds": round(rbsecs, 2), "plain_python_records_per_s": round(rn / rsecs),
                "plain_seconds": round(rsecs, 2), "beam_over_plain": round((rread / rbsecs) / (rn / rsecs), 3)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
