"""Flower traffic of a horizontal federation is TLS, and a certificate mismatch is a clear error.

The real SuperLink is served with the server's certificate of one launch's PKI; a party holding
another launch's CA must be refused at once with an error naming the problem, not wait silently
for the whole run (Flower's own client retries a refused certificate as if the server were down).
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from modelplane.privacy.errors import CertificateError
from modelplane.privacy.federation import SERVER_ROLE, identity_env
from modelplane.privacy.horizontal import local, transport
from modelplane.privacy.tls import TlsFiles, make_throwaway_pki, mint_pki
from tests.privacy.horizontal_fixtures import shards


def _serve_once(ctx: ssl.SSLContext | None) -> tuple[int, threading.Thread]:
    """A listener that answers one connection: a TLS handshake with ``ctx``, or plaintext bytes."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                if ctx is None:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    return
                try:
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1)
                except (ssl.SSLError, OSError):
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return port, t


def _server_ctx(files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(files.cert), str(files.key))
    return ctx


def test_check_accepts_the_jobs_certificate_and_names_what_is_wrong_otherwise(tmp_path: Path) -> None:
    ours = make_throwaway_pki(tmp_path / "ours", [SERVER_ROLE, "party"])
    theirs = make_throwaway_pki(tmp_path / "theirs", ["party"])

    port, t = _serve_once(_server_ctx(ours[SERVER_ROLE]))
    transport.check_superlink(f"127.0.0.1:{port}", ours["party"].ca, wait_s=5)
    t.join(5)

    port, t = _serve_once(_server_ctx(ours[SERVER_ROLE]))
    with pytest.raises(CertificateError, match="TLS handshake failed: its certificate did not verify") as err:
        transport.check_superlink(f"127.0.0.1:{port}", theirs["party"].ca, wait_s=5)
    assert "not signed by this party's CA" in str(err.value.hint)
    t.join(5)

    port, t = _serve_once(None)
    with pytest.raises(CertificateError, match="did not answer in TLS"):
        transport.check_superlink(f"127.0.0.1:{port}", ours["party"].ca, wait_s=5)
    t.join(5)


def test_tls_files_come_from_the_launch_or_plaintext_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ("MODELPLANE_TLS_CA_PEM", "MODELPLANE_TLS_CERT_PEM", "MODELPLANE_TLS_KEY_PEM"):
        monkeypatch.delenv(key, raising=False)
    common = {
        "ca": None,
        "cert": None,
        "key": None,
        "name": "server",
        "need_key": True,
        "directory": tmp_path / "d",
    }
    with pytest.raises(CertificateError, match="no TLS identity") as err:
        transport.resolve(insecure=False, **common)  # type: ignore[arg-type]
    assert "--insecure" in str(err.value.hint)
    assert transport.resolve(insecure=True, **common) is None  # type: ignore[arg-type]
    identity = mint_pki([SERVER_ROLE])[SERVER_ROLE]
    for k, v in identity_env(SERVER_ROLE, {}, identity).items():
        monkeypatch.setenv(k, v)
    got = transport.resolve(insecure=False, **common)  # type: ignore[arg-type]
    assert got is not None and got.identity() is not None
    assert got.ca.read_text() == identity.ca and oct(got.key.stat().st_mode & 0o777) == "0o600"  # type: ignore[union-attr]
    monkeypatch.delenv("MODELPLANE_TLS_KEY_PEM")
    with pytest.raises(CertificateError, match="MODELPLANE_TLS_KEY_PEM not set"):
        transport.resolve(insecure=False, **common)  # type: ignore[arg-type]


@pytest.mark.timeout(300)
def test_party_with_another_launchs_ca_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    shard_paths, test = shards(tmp_path)
    port = local.free_port()
    ours = mint_pki([SERVER_ROLE, "party-0"])
    stranger = mint_pki(["party-0"])["party-0"]  # the same name, from another launch's CA
    book = {SERVER_ROLE: f"127.0.0.1:{port}"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelplane.privacy.horizontal.server",
            "--listen",
            f"127.0.0.1:{port}",
            "--test-data",
            str(test),
            "--output-dir",
            str(tmp_path / "out"),
            "--rounds",
            "1",
            "--timeout",
            "240",
        ],
        env=local.base_env() | identity_env(SERVER_ROLE, book, ours[SERVER_ROLE]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        party = subprocess.run(
            [
                sys.executable,
                "-m",
                "modelplane.privacy.horizontal.client",
                "--party",
                "party-0",
                "--data",
                str(shard_paths["party-0"]),
                "--superlink",
                f"127.0.0.1:{port}",
                "--server-grace",
                "120",
            ],
            env=local.base_env() | identity_env("party-0", book, stranger),
            capture_output=True,
            text=True,
            timeout=200,
        )
    finally:
        os.killpg(server.pid, 9)
        server.wait()
    assert party.returncode == 1, party.stderr[-2000:]
    assert "refused the SuperLink" in party.stderr and "its certificate did not verify" in party.stderr, (
        party.stderr
    )
    assert "not signed by this party's CA" in party.stderr
    assert "Traceback" not in party.stderr


def test_clis_without_a_tls_identity_say_how_to_get_one(tmp_path: Path) -> None:
    shard_paths, test = shards(tmp_path)
    env = local.base_env()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelplane.privacy.horizontal.client",
            "--party",
            "p",
            "--data",
            str(shard_paths["party-0"]),
            "--superlink",
            "127.0.0.1:1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "no TLS identity" in r.stderr and "--insecure" in r.stderr, r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelplane.privacy.horizontal.server",
            "--listen",
            "127.0.0.1:1",
            "--test-data",
            str(test),
            "--output-dir",
            str(tmp_path / "o"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "no TLS identity" in r.stderr and "Traceback" not in r.stderr, r.stderr
