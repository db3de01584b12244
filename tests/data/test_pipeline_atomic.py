"""Kill the pipeline process while it writes shards: no sink directory, whole or partial, is visible;
only hidden staging directories remain, and a rerun commits the complete output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from modelplane.data.pipeline import from_file
from modelplane.data.pipeline.runner import run
from modelplane.data.tfrecord import iter_records

N = 120_000


def test_sigkill_mid_write_leaves_nothing_half_written(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    with open(src, "w") as f:
        for i in range(N):
            f.write(json.dumps({"id": i, "text": f"record number {i}"}) + "\n")
    out = tmp_path / "out"
    spec = {"name": "atomic-test", "sources": [{"name": "raw", "type": "files", "path": str(src)}],
            "schema": {"fields": {"id": {"type": "int"}, "text": {"type": "str"}}},
            "transforms": [{"op": "tokenize", "field": "text"}],
            "sinks": [{"type": "tfrecord", "path": str(out / "tf"), "maxRecordsPerShard": 5000},
                      {"type": "parquet", "path": str(out / "pq"), "maxRecordsPerShard": 5000}],
            "deadLetter": {"path": str(out / "dead")},
            "lineage": {"url": f"sqlite:///{tmp_path / 'lineage.db'}"}}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))

    proc = subprocess.Popen([sys.executable, "-m", "modelplane.data.pipeline", "run", str(spec_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            staged = list(out.glob(".tf.staging-*/*")) if out.exists() else []
            # Mid-write: some shards finished, one open.
            if any(p.name.endswith(".inprogress") for p in staged) and any(p.suffix == ".tfrecord" for p in staged):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the pipeline finished before it could be killed: " + proc.stderr.read().decode()
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
        proc.stderr.close()  # type: ignore[union-attr]

    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == []
    assert not (out / "tf").exists() and not (out / "pq").exists() and not (out / "dead").exists()
    assert any(p.name.startswith(".tf.staging-") for p in out.iterdir())  # the evidence: it was writing

    report = run(from_file(spec_path))
    assert report.sinks[str(out / "tf")]["records"] == N
    got = 0
    for f in (out / "tf").glob("*.tfrecord"):
        with open(f, "rb") as fh:
            got += sum(1 for _ in iter_records(fh))
    assert got == N and pq.read_table(out / "pq").num_rows == N
    assert not list((out / "tf").glob("*.inprogress"))
