"""Audit transparency log throughput and proof cost, against a plain unhashed insert baseline.

Both sides write to a durable SQLite file (WAL, synchronous=FULL) through the same SQLAlchemy
engine setup; "batched" commits `--batch` entries per transaction, "per-entry" commits (fsyncs)
each entry. Prints one JSON object on stdout; progress goes to stderr.

    PYTHONPATH=src .venv/bin/python benchmarks/audit_log.py --entries 1000000
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import BigInteger, Column, Engine, Float, MetaData, Table, Text, create_engine, insert

from modelplane.security.audit import (
    AuditEntry,
    AuditLog,
    NoteSigner,
    make_sqlite_durable,
    verify_consistency,
    verify_inclusion,
    verify_log,
)
from modelplane.security.audit.sql import metadata as audit_metadata

T0 = 1_780_000_000.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def entries(start: int, n: int) -> list[AuditEntry]:
    return [
        AuditEntry(
            operator=f"user{i % 97}",
            operation="job.create",
            resource=f"team-{i % 7}/jobs/job-{i}",
            timestamp=T0 + i * 0.001,
            outcome="succeeded",
            request_id=f"req-{i:012d}",
        )
        for i in range(start, start + n)
    ]


def durable_engine(url: str) -> Engine:
    """SQLite: WAL + synchronous=FULL. PostgreSQL: its defaults (fsync on, synchronous_commit on)."""
    return make_sqlite_durable(create_engine(url))


def baseline(url: str, n_batched: int, batch: int, n_single: int) -> dict[str, float]:
    """The same rows without hashing, tree or head lock: what a naive audit table costs."""
    engine = durable_engine(url)
    md = MetaData()
    table = Table(
        "plain_audit",
        md,
        Column("idx", BigInteger, primary_key=True, autoincrement=False),
        Column("body", Text),
        Column("timestamp", Float, index=True),  # same retention index as ours: a fair baseline
    )
    md.drop_all(engine)
    md.create_all(engine)
    idx = 0
    t = time.perf_counter()
    for start in range(0, n_batched, batch):
        rows = [
            {"idx": idx + k, "body": e.canonical(idx + k).decode(), "timestamp": e.timestamp}
            for k, e in enumerate(entries(start, min(batch, n_batched - start)))
        ]
        with engine.begin() as conn:
            conn.execute(insert(table), rows)
        idx += len(rows)
    batched = n_batched / (time.perf_counter() - t)
    t = time.perf_counter()
    for e in entries(idx, n_single):
        with engine.begin() as conn:
            conn.execute(insert(table).values(idx=idx, body=e.canonical(idx).decode(), timestamp=e.timestamp))
        idx += 1
    single = n_single / (time.perf_counter() - t)
    engine.dispose()
    return {"batched_appends_per_s": batched, "per_entry_fsync_appends_per_s": single}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--entries", type=int, default=1_000_000, help="log size for proofs and verify")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--single", type=int, default=300, help="entries appended with one commit each")
    ap.add_argument("--proofs", type=int, default=2000)
    ap.add_argument("--url", default="", help="database URL (default: a durable SQLite file in a temp dir)")
    args = ap.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        log("baseline: plain unhashed inserts")
        base_url = args.url or f"sqlite:///{Path(tmp) / 'plain.db'}"
        base = baseline(base_url, args.entries, args.batch, args.single)
        log(f"  {base}")

        engine = durable_engine(args.url or f"sqlite:///{Path(tmp) / 'audit.db'}")
        audit_metadata.drop_all(engine)
        signer = NoteSigner.generate("bench.modelplane/audit")
        audit = AuditLog(engine, signer)
        log(f"ours: {args.entries} batched appends ({args.batch} per commit)")
        t = time.perf_counter()
        for start in range(0, args.entries, args.batch):
            audit.append(entries(start, min(args.batch, args.entries - start)))
        batched = args.entries / (time.perf_counter() - t)
        t = time.perf_counter()
        note = audit.checkpoint(now=T0 + 1e6)
        checkpoint_s = time.perf_counter() - t
        log(f"  {batched:.0f}/s; per-entry commits: {args.single}")
        t = time.perf_counter()
        for e in entries(args.entries, args.single):
            audit.record(e)
        single = args.single / (time.perf_counter() - t)
        size = audit.size
        root = audit.root()

        log(f"proofs at size {size}")
        idxs = [rng.randrange(size) for _ in range(args.proofs)]
        gen, ver = [], []
        for i in idxs:
            t = time.perf_counter()
            proof = audit.inclusion_proof(i)
            gen.append(time.perf_counter() - t)
            leaf = audit._tree.leaf(i)
            t = time.perf_counter()
            verify_inclusion(i, size, leaf, proof, root)
            ver.append(time.perf_counter() - t)
        cgen, cver = [], []
        for _ in range(args.proofs):
            m = rng.randrange(1, size)
            t = time.perf_counter()
            cproof = audit.consistency_proof(m)
            cgen.append(time.perf_counter() - t)
            r1 = audit.root(m)
            t = time.perf_counter()
            verify_consistency(m, size, cproof, r1, root)
            cver.append(time.perf_counter() - t)
        audit.checkpoint(now=T0 + 2e6)

        log("reopen (rebuild tree from stored hashes)")
        t = time.perf_counter()
        AuditLog(engine, signer)
        reopen_s = time.perf_counter() - t
        log("verify whole log")
        t = time.perf_counter()
        report = verify_log(engine, [signer.verifier], signer.name)
        verify_s = time.perf_counter() - t
        assert report.ok, report.problem
        engine.dispose()

    def us(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {"p50_us": statistics.median(xs) * 1e6, "p99_us": xs[int(len(xs) * 0.99)] * 1e6}

    out = {
        "benchmark": "audit_log",
        "storage": engine.dialect.name
        + (" file, WAL, synchronous=FULL" if engine.dialect.name == "sqlite" else ""),
        "entries": size,
        "batch": args.batch,
        "ours": {"batched_appends_per_s": round(batched), "per_entry_fsync_appends_per_s": round(single, 1)},
        "baseline_plain_insert": {k: round(v, 1) for k, v in base.items()},
        "ratio_ours_over_baseline": {
            "batched": round(batched / base["batched_appends_per_s"], 3),
            "per_entry_fsync": round(single / base["per_entry_fsync_appends_per_s"], 3),
        },
        "inclusion_proof_generate": us(gen),
        "inclusion_proof_verify": us(ver),
        "consistency_proof_generate": us(cgen),
        "consistency_proof_verify": us(cver),
        "checkpoint_sign_and_store_s": round(checkpoint_s, 4),
        "reopen_rebuild_tree_s": round(reopen_s, 2),
        "verify_log_s": round(verify_s, 2),
        "checkpoint_note_bytes": len(note),
        "goal_batched_appends_per_s": 20000,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
