"""The vertical-LR FederatedJob launcher: the control plane's address book and per-launch PKI,
roles that run on nothing but the network, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelplane.control.federation import federation_env, role_of
from modelplane.privacy.errors import CertificateError
from modelplane.privacy.federation import FEDERATION_ENDPOINTS_ENV, TLS_KEY_ENV, from_env
from modelplane.privacy.vertical import job
from modelplane.serve.launch import free_port

SRC = str(Path(job.__file__).resolve().parents[3])


def _issue(ports: dict[str, int]) -> dict[str, dict[str, str]]:
    return federation_env({p: ("127.0.0.1", port) for p, port in ports.items()})


def test_every_launch_gets_an_address_book_and_a_pki_of_its_own(tmp_path: Path) -> None:
    first = _issue({"server": 4000, "party-guest": 4001, "party-host": 4002})
    second = _issue({"server": 4000, "party-guest": 4001, "party-host": 4002})
    assert set(first) == {"server", "party-guest", "party-host"}
    book = json.loads(first["party-host"][FEDERATION_ENDPOINTS_ENV])
    assert book == {"server": "127.0.0.1:4000", "guest": "127.0.0.1:4001", "host": "127.0.0.1:4002"}
    assert role_of("party-guest") == "guest"
    # One CA per launch; each role its own key.
    assert first["server"]["MODELPLANE_TLS_CA_PEM"] == first["party-host"]["MODELPLANE_TLS_CA_PEM"]
    # A certificate of another launch is refused at the handshake (another CA; test_tls.py).
    assert first["server"]["MODELPLANE_TLS_CA_PEM"] != second["server"]["MODELPLANE_TLS_CA_PEM"]
    assert len({env[TLS_KEY_ENV] for env in first.values()}) == 3
    task = from_env(first["party-host"], tmp_path / "host")
    assert task.role == "host" and task.address_of("guest") == "127.0.0.1:4001"
    assert (task.tls.key.stat().st_mode & 0o777) == 0o600


def test_roles_map_to_pod_sets_and_read_addresses_from_the_book(tmp_path: Path) -> None:
    issued = _issue({"server": 4000, "party-guest": 4001, "party-host": 4002})
    arbiter = job.role_argv("arbiter", from_env(issued["server"], tmp_path / "a"), ["--key-bits", "1024"])
    assert arbiter[arbiter.index("--listen") + 1] == "0.0.0.0:4000" and arbiter[-2:] == ["--key-bits", "1024"]
    guest = job.role_argv("guest", from_env(issued["party-guest"], tmp_path / "g"), ["--data", "g.csv"])
    assert guest[guest.index("--arbiter") + 1] == "127.0.0.1:4000"
    assert guest[guest.index("--listen") + 1] == "0.0.0.0:4001"
    host = job.role_argv("host", from_env(issued["party-host"], tmp_path / "h"), [])
    assert host[host.index("--guest") + 1] == "127.0.0.1:4001"
    assert host[host.index("--cert") + 1].endswith("host.pem")
    with pytest.raises(CertificateError, match="identity of 'host'"):
        job.role_argv("guest", from_env(issued["party-host"], tmp_path / "h2"), [])


def test_a_role_outside_a_federated_job_says_what_is_missing() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": SRC}
    r = subprocess.run([sys.executable, "-m", "modelplane.privacy.vertical.job", "guest", "--data", "x.csv"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2 and "MODELPLANE_FEDERATION_ROLE" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.timeout(300)
def test_three_roles_train_with_what_the_control_plane_issues(tmp_path: Path) -> None:
    """Real processes, each with only its own environment and data directory: no shared files."""
    from modelplane.privacy.vertical.data import main as split_main

    issued = _issue({"server": free_port(), "party-guest": free_port(), "party-host": free_port()})
    for role in ("guest", "host"):
        assert split_main(["--only", role, "--out", str(tmp_path / role)]) == 0
    procs = {}
    for pod_set, argv in (("server", ["arbiter", "--key-bits", "1024"]),
                          ("party-guest", ["guest", "--data", str(tmp_path / "guest" / "guest.csv"), "--epochs", "1",
                                           "--psi-bits", "1024", "--output", str(tmp_path / "guest.json")]),
                          ("party-host", ["host", "--data", str(tmp_path / "host" / "host.csv")])):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": SRC, "TMPDIR": str(tmp_path),
               **issued[pod_set]}
        procs[pod_set] = subprocess.Popen([sys.executable, "-m", "modelplane.privacy.vertical.job", *argv],
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = {p: proc.communicate(timeout=240)[0] for p, proc in procs.items()}
    assert all(proc.returncode == 0 for proc in procs.values()), outputs
    assert json.loads((tmp_path / "guest.json").read_text())["test_auc"] > 0.95
