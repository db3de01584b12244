"""The security commands end to end: a real `modelplane up`, the CLI as a subprocess, SQLite tampering."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest
import yaml

from tests.integration.conftest import REPO, Server, make_server

PASSWORD = "correct horse battery"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = make_server(tmp_path).start()
    yield s
    s.stop()


def ok(server: Server, *args: str, stdin: str | None = None) -> str:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "modelplane", *args], cwd=REPO, env=server.env, input=stdin,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_login_with_totp_audit_verify_proof_policies_and_tampering(server: Server, tmp_path: Path) -> None:
    creds = server.home / "credentials"
    assert creds.stat().st_mode & 0o777 == 0o600
    assert (server.home / "keys" / "audit.skey").stat().st_mode & 0o777 == 0o600

    ok(server, "users", "create", "alice", "--team", "research", "--role", "member", "--password", PASSWORD)
    out = ok(server, "login", "alice", "--password", PASSWORD, "--totp", "")
    assert "logged in as alice (team research, role member)" in out
    session = yaml.safe_load(creds.read_text())
    assert session["user"] == "alice" and session["access_token"].startswith("mp1.")
    # Enrol TOTP over HTTP with alice's session, then log in again through the prompts.
    h = {"Authorization": f"Bearer {session['access_token']}"}
    secret = httpx.post(server.url + "/api/v1/auth/mfa/enroll", headers=h).json()["secret"]
    totp = pyotp.TOTP(secret)
    while 30 - time.time() % 30 < 8:  # keep both codes below inside one window of steps
        time.sleep(0.5)
    now = time.time()
    assert httpx.post(server.url + "/api/v1/auth/mfa/confirm", headers=h, json={"code": totp.at(now - 30)}).is_success
    ok(server, "logout")
    out = ok(server, "login", "alice", stdin=f"{PASSWORD}\n{totp.at(now)}\n")
    assert "role member, MFA)" in out

    # alice (team research) runs the example and sees only her team's jobs; nodes are readable to her.
    ok(server, "apply", "-f", "examples/training-job.yaml")
    assert "ddp-demo" in ok(server, "get", "jobs")
    assert "a100-0" in ok(server, "get", "nodes")
    # An expired or revoked access token is traded for a new one with the saved refresh token.
    session = yaml.safe_load(creds.read_text())
    creds.write_text(yaml.safe_dump({**session, "access_token": "mp1.expired.x"}))
    assert "ddp-demo" in ok(server, "get", "jobs")
    renewed = yaml.safe_load(creds.read_text())
    assert renewed["access_token"].startswith("mp1.") and renewed["refresh_token"] != session["refresh_token"]
    r = server.cli("cluster", "import", "examples/cluster.yaml")
    assert r.returncode == 2 and "not allowed by policy" in r.stderr
    ok(server, "logout")
    assert "access_token" not in yaml.safe_load(creds.read_text())

    # Back on the admin key: verify the log, print a proof, change the policies.
    out = ok(server, "audit", "verify")
    assert "audit log OK" in out and "pinned key" in out
    ok(server, "users", "create", "carol", "--team", "research", "--password", PASSWORD)  # the log grows
    out = ok(server, "audit", "verify")
    assert "consistent with the checkpoint of size" in out  # it extends what this machine saw before
    out = ok(server, "audit", "proof", "1")
    assert "included in the tree of" in out and "checkpoint signature verified with pinned key" in out
    text = ok(server, "policies", "get")
    assert "members-read-the-node-pool" in text
    (tmp_path / "p.cedar").write_text(text)
    assert "version 2" in ok(server, "policies", "set", "-f", str(tmp_path / "p.cedar"))

    with sqlite3.connect(server.home / "modelplane.db") as db:
        db.execute("UPDATE security_audit_entries SET body = replace(body, 'alice', 'mallory') WHERE idx = ("
                   "SELECT min(idx) FROM security_audit_entries WHERE body LIKE '%alice%')")
        bad = db.execute("SELECT min(idx) FROM security_audit_entries WHERE body LIKE '%mallory%'").fetchone()[0]
    r = server.cli("audit", "verify")
    assert r.returncode == 1 and f"at entry {bad}:" in r.stderr, (r.stdout, r.stderr)
