"""The SQL audit log on SQLite and PostgreSQL: proofs, checkpoints, retention, tamper detection."""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, delete, update

from modelplane.security.audit import (
    AuditEntry,
    AuditLog,
    NoteSigner,
    make_sqlite_durable,
    open_checkpoint,
    verify_consistency,
    verify_inclusion,
    verify_log,
)
from modelplane.security.audit.merkle import leaf_hash
from modelplane.security.audit.sql import DAY, entries_table
from modelplane.security.errors import SecurityConfigError

ORIGIN = "modelplane.test/audit"
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


def _entry(i: int, t: float = T0) -> AuditEntry:
    return AuditEntry(
        operator=f"user{i % 3}",
        operation="job.create",
        resource=f"team-a/jobs/j{i}",
        timestamp=t + i,
        outcome="succeeded",
        request_id=f"req-{i}",
    )


def _filled(engine: Engine, signer: NoteSigner, n: int = 20) -> AuditLog:
    log = AuditLog(engine, signer)
    log.append([_entry(i) for i in range(n // 2)])
    log.checkpoint(now=T0 + 100)
    log.append([_entry(i) for i in range(n // 2, n)])
    log.checkpoint(now=T0 + 200)
    return log


def test_append_prove_and_reopen(engine: Engine, signer: NoteSigner) -> None:
    log = _filled(engine, signer, 20)
    assert log.size == 20
    note = log.latest_checkpoint()
    assert note is not None
    cp = open_checkpoint(note, [signer.verifier], ORIGIN)
    assert (cp.size, cp.root_hash) == (20, log.root())
    stored = log.entry(7)
    assert stored.entry == _entry(7)
    verify_inclusion(7, 20, stored.leaf_hash, log.inclusion_proof(7, 20), cp.root_hash)
    verify_consistency(10, 20, log.consistency_proof(10, 20), log.root(10), cp.root_hash)
    # A second process opening the same database sees the same tree and continues it.
    again = AuditLog(engine, signer)
    assert again.size == 20 and again.root() == log.root()
    assert again.record(_entry(20)) == 20
    assert log.refresh() == 21 and log.root() == again.root()
    assert verify_log(engine, [signer.verifier], ORIGIN).ok


def test_untouched_log_verifies(engine: Engine, signer: NoteSigner) -> None:
    _filled(engine, signer)
    report = verify_log(engine, [signer.verifier], ORIGIN)
    assert report.ok, report.problem
    assert (report.entries_checked, report.checkpoints_checked, report.first_bad_index) == (20, 2, None)


def test_modified_row_is_named(engine: Engine, signer: NoteSigner) -> None:
    _filled(engine, signer)
    with engine.begin() as conn:
        body = conn.execute(entries_table.select().where(entries_table.c.idx == 13)).one().body
        conn.execute(
            update(entries_table)
            .where(entries_table.c.idx == 13)
            .values(body=body.replace("succeeded", "failed"))
        )
    report = verify_log(engine, [signer.verifier], ORIGIN)
    assert not report.ok and report.first_bad_index == 13
    assert "modified" in report.problem


def test_deleted_row_is_named(engine: Engine, signer: NoteSigner) -> None:
    _filled(engine, signer)
    with engine.begin() as conn:
        conn.execute(delete(entries_table).where(entries_table.c.idx == 4))
    report = verify_log(engine, [signer.verifier], ORIGIN)
    assert not report.ok and report.first_bad_index == 4 and "missing" in report.problem


def test_truncated_tail_is_detected(engine: Engine, signer: NoteSigner) -> None:
    _filled(engine, signer)
    with engine.begin() as conn:
        conn.execute(delete(entries_table).where(entries_table.c.idx >= 17))
    report = verify_log(engine, [signer.verifier], ORIGIN)
    assert not report.ok and report.first_bad_index == 17


def test_reordered_rows_are_named(engine: Engine, signer: NoteSigner) -> None:
    _filled(engine, signer)
    with engine.begin() as conn:
        a = conn.execute(entries_table.select().where(entries_table.c.idx == 5)).one()
        b = conn.execute(entries_table.select().where(entries_table.c.idx == 6)).one()
        conn.execute(
            update(entries_table).where(entries_table.c.idx == 5).values(body=b.body, leaf_hash=b.leaf_hash)
        )
        conn.execute(
            update(entries_table).where(entries_table.c.idx == 6).values(body=a.body, leaf_hash=a.leaf_hash)
        )
    report = verify_log(engine, [signer.verifier], ORIGIN)
    assert not report.ok and report.first_bad_index == 5 and "reordered" in report.problem


def test_rewritten_body_and_hash_is_caught_by_the_signed_checkpoint(
    engine: Engine, signer: NoteSigner
) -> None:
    _filled(engine, signer)
    forged = _entry(12).canonical(12).replace(b"succeeded", b"failed")
    with engine.begin() as conn:
        conn.execute(
            update(entries_table)
            .where(entries_table.c.idx == 12)
            .values(body=forged.decode(), leaf_hash=leaf_hash(forged))
        )
    report = verify_log(engine, [signer.verifier], ORIGIN)
    assert not report.ok
    assert report.first_bad_index == 10  # the first entry not covered by the last good checkpoint
    assert "root signed at size 20" in report.problem


def test_forged_checkpoint_is_detected(engine: Engine, signer: NoteSigner) -> None:
    _filled(engine, signer)
    other = NoteSigner.generate(ORIGIN)
    report = verify_log(engine, [other.verifier], ORIGIN)
    assert not report.ok and "trusted key" in report.problem


def test_retention_prunes_bodies_but_proofs_still_verify(engine: Engine, signer: NoteSigner) -> None:
    log = AuditLog(engine, signer)
    log.append([_entry(i, T0) for i in range(10)])  # old
    log.append([_entry(i, T0 + 200 * DAY) for i in range(10, 15)])  # recent
    log.checkpoint(now=T0 + 200 * DAY)
    root = log.root()
    # Six months later than the old entries but not the new ones.
    pruned = log.prune(now=T0 + 190 * DAY)
    assert pruned == 10
    assert log.entry(3).entry is None and log.entry(12).entry is not None
    again = AuditLog(engine, signer)
    assert again.root() == root
    verify_inclusion(3, 15, again.entry(3).leaf_hash, again.inclusion_proof(3), root)
    report = verify_log(engine, [signer.verifier], ORIGIN)
    assert report.ok and report.pruned == 10
    # Entries younger than six months are kept by default.
    assert log.prune(now=T0 + 200 * DAY) == 0


def test_retention_never_prunes_entries_without_a_checkpoint(engine: Engine, signer: NoteSigner) -> None:
    log = AuditLog(engine, signer)
    log.append([_entry(i) for i in range(5)])
    assert log.prune(now=T0 + 400 * DAY) == 0
    with pytest.raises(SecurityConfigError, match="retention"):
        log.prune(now=T0, retention_s=60)


def test_group_commit_from_many_threads(engine: Engine, signer: NoteSigner) -> None:
    import threading

    from modelplane.security.audit.recorder import GroupCommitRecorder

    log = AuditLog(engine, signer)
    recorder = GroupCommitRecorder(log)
    got: list[int] = []
    lock = threading.Lock()

    def worker(w: int) -> None:
        for k in range(25):
            idx = recorder.record(_entry(w * 100 + k))
            with lock:
                got.append(idx)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recorder.close()
    assert sorted(got) == list(range(200))
    log.checkpoint(now=T0)
    assert verify_log(engine, [signer.verifier], ORIGIN).ok
    assert log.entry(got[0]).entry is not None


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(3, 40),
    data=st.data(),
    kind=st.sampled_from(["modify", "delete", "swap"]),
)
def test_any_single_tamper_is_named_exactly(n: int, data: st.DataObject, kind: str) -> None:
    signer = NoteSigner.generate(ORIGIN)
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_sqlite_durable(create_engine(f"sqlite:///{tmp}/a.db"))
        log = AuditLog(engine, signer)
        log.append([_entry(i) for i in range(n)])
        log.checkpoint(now=T0)
        victim = data.draw(st.integers(0, n - 2))
        with engine.begin() as conn:
            row = conn.execute(entries_table.select().where(entries_table.c.idx == victim)).one()
            if kind == "modify":
                conn.execute(
                    update(entries_table)
                    .where(entries_table.c.idx == victim)
                    .values(body=row.body.replace("job.create", "job.delete"))
                )
            elif kind == "delete":
                conn.execute(delete(entries_table).where(entries_table.c.idx == victim))
            else:
                nxt = conn.execute(entries_table.select().where(entries_table.c.idx == victim + 1)).one()
                conn.execute(delete(entries_table).where(entries_table.c.idx.in_([victim, victim + 1])))
                conn.execute(
                    entries_table.insert(),
                    [
                        {
                            "idx": victim,
                            "leaf_hash": nxt.leaf_hash,
                            "body": nxt.body,
                            "timestamp": nxt.timestamp,
                        },
                        {
                            "idx": victim + 1,
                            "leaf_hash": row.leaf_hash,
                            "body": row.body,
                            "timestamp": row.timestamp,
                        },
                    ],
                )
        report = verify_log(engine, [signer.verifier], ORIGIN)
        engine.dispose()
    assert not report.ok
    assert report.first_bad_index == victim, report.problem


def test_erasure_unlinks_the_subject_and_the_log_still_verifies(engine: Engine, signer: NoteSigner) -> None:
    from modelplane.security.audit import Pseudonymizer

    psn = Pseudonymizer(engine)
    log = AuditLog(engine, signer, pseudonymizer=psn)
    log.append([_entry(i) for i in range(6)])  # operators user0, user1, user2
    log.checkpoint(now=T0)
    stored = log.entry(1)
    assert stored.entry is not None and stored.entry.operator.startswith("psn:")
    assert "user1" not in stored.entry.canonical(1).decode()
    assert log.operator_of(stored) == "user1"
    assert psn.erase("user1", now=T0 + 10)
    assert log.operator_of(log.entry(1)) is None and log.operator_of(log.entry(4)) is None
    assert log.operator_of(log.entry(0)) == "user0"
    report = verify_log(engine, [signer.verifier], ORIGIN)
    assert report.ok, report.problem
    # A returning user gets a new, unlinkable pseudonym.
    log.record(_entry(7))  # user1 again
    assert log.entry(6).entry.operator != stored.entry.operator  # type: ignore[union-attr]
    assert log.operator_of(log.entry(6)) == "user1"
