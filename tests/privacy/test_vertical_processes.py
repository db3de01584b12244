"""The three roles as separate OS processes through their command-line entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from modelplane.privacy.vertical.local import run_local


def test_three_processes_train_over_tls(tmp_path: Path, party_csvs: tuple[Path, Path]) -> None:
    out = run_local(tmp_path, *party_csvs, key_bits=1024, psi_bits=1024, epochs=2)
    guest, host, arbiter = out["guest"], out["host"], out["arbiter"]
    assert guest["shared_ids"] == host["shared_ids"] == 529
    assert guest["test_auc"] > 0.97
    assert len(guest["epoch_seconds"]) == 2
    assert set(arbiter["decrypted"]) == {"host", "guest"}
    assert len(host["weights"]) == 20 and len(guest["weights"]) == 10


def test_missing_data_file_is_a_clear_error_not_a_traceback(tmp_path: Path, pki) -> None:
    files = pki["host"]
    proc = subprocess.run(
        [sys.executable, "-m", "modelplane.privacy.vertical.host", "--ca", str(files.ca), "--cert", str(files.cert),
         "--key", str(files.key), "--arbiter", "127.0.0.1:1", "--guest", "127.0.0.1:2",
         "--data", str(tmp_path / "nope.csv")],
        capture_output=True, text=True, env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
        timeout=60,
    )
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
