"""The vertical-LR FederatedJob launcher: a PKI per job, addresses by rendezvous, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelplane.privacy.errors import PrivacyError
from modelplane.privacy.vertical import job


def test_each_job_gets_its_own_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTER_PORT", "12345")
    cas = []
    for job_id in ("job-a", "job-b"):
        monkeypatch.setenv("MODELPLANE_JOB_ID", job_id)
        d = job.job_dir(tmp_path)
        d.mkdir(parents=True)
        argv = job.role_argv("arbiter", d, ["--key-bits", "1024"], timeout=1)
        assert argv[argv.index("--listen") + 1] == "0.0.0.0:12345"
        assert argv[-2:] == ["--key-bits", "1024"]
        cas.append((d / "pki" / "ca.pem").read_bytes())
        assert all((d / "pki" / f"{r}.{ext}").is_file() for r in job.ROLES for ext in ("pem", "key"))
    assert cas[0] != cas[1]
    # Minting again (an arbiter restarted within the same job) keeps the job's CA.
    assert job.mint_pki(tmp_path / "job-b") == tmp_path / "job-b" / "pki"
    assert (tmp_path / "job-b" / "pki" / "ca.pem").read_bytes() == cas[1]


def test_parties_find_the_arbiter_and_guest_by_rendezvous(tmp_path: Path) -> None:
    job.mint_pki(tmp_path)
    (tmp_path / "arbiter.addr").write_text("0.0.0.0:4000")
    guest = job.role_argv("guest", tmp_path, ["--data", "g.csv"], timeout=1)
    assert guest[guest.index("--arbiter") + 1] == "127.0.0.1:4000"
    (tmp_path / "guest.addr").write_text("127.0.0.1:4001")
    host = job.role_argv("host", tmp_path, [], timeout=1)
    assert host[host.index("--guest") + 1] == "127.0.0.1:4001"
    assert host[host.index("--cert") + 1].endswith("host.pem")


def test_a_party_without_its_arbiter_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(PrivacyError, match="certificates"):
        job.role_argv("host", tmp_path, [], timeout=0.3)
    env = {"MODELPLANE_JOB_ID": "j1", "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(Path(job.__file__).resolve().parents[3])}
    r = subprocess.run([sys.executable, "-m", "modelplane.privacy.vertical.job", "guest", "--rendezvous",
                        str(tmp_path), "--wait", "0.5", "--data", "x.csv"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 2 and "the job's certificates" in r.stderr and "Traceback" not in r.stderr
