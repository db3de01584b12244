"""Acknowledged appends survive ``kill -9`` of the writer (SQLite WAL, synchronous=FULL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from modelplane.security.audit import AuditLog, NoteSigner, make_sqlite_durable, verify_log

WRITER = """
import os, sys
from sqlalchemy import create_engine
from modelplane.security.audit import AuditEntry, AuditLog, NoteSigner, make_sqlite_durable
log = AuditLog(make_sqlite_durable(create_engine(sys.argv[1])), NoteSigner.from_skey(os.environ["SKEY"]))
i = 0
while True:
    batch = [AuditEntry("w", "op", f"r{i + k}", 1.0e9 + i + k, "succeeded", f"q{i + k}") for k in range(50)]
    last = log.append(batch)[-1]
    i += 50
    print(last, flush=True)
"""


@pytest.mark.integration
def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    signer = NoteSigner.generate("modelplane.test/audit")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "SKEY": signer.skey, "PYTHONPATH": src}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    acked = -1
    for _ in range(20):
        line = proc.stdout.readline()
        assert line, "writer died before acknowledging 20 batches"
        acked = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    engine = make_sqlite_durable(create_engine(url))
    log = AuditLog(engine, signer)
    assert log.size >= acked + 1
    log.checkpoint(now=2.0e9)
    assert verify_log(engine, [signer.verifier], signer.name).ok
