from __future__ import annotations

import threading
from pathlib import Path

import pytest

from modelplane.privacy.errors import CertificateError, KeyMismatch
from modelplane.privacy.tls import Listener, TlsFiles, connect, make_throwaway_pki


def test_mutual_tls_names_the_peer_by_certificate(pki: dict[str, TlsFiles]) -> None:
    listener = Listener("127.0.0.1:0", pki["guest"])
    got: dict[str, object] = {}

    def serve() -> None:
        ch = listener.accept()
        got["peer"] = ch.peer
        got["msg"] = ch.recv()
        ch.send({"kind": "pong"})

    t = threading.Thread(target=serve)
    t.start()
    ch = connect(listener.address, pki["host"], "guest")
    ch.send({"kind": "ping", "n": 2**2000})
    assert ch.recv() == {"kind": "pong"}
    t.join()
    listener.close()
    assert got == {"peer": "host", "msg": {"kind": "ping", "n": 2**2000}}


def test_certificate_from_another_ca_is_refused(pki: dict[str, TlsFiles], tmp_path: Path) -> None:
    stranger = make_throwaway_pki(tmp_path, ["host"])["host"]
    listener = Listener("127.0.0.1:0", pki["guest"])
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            listener.accept()
        except CertificateError as exc:
            errors.append(exc)

    t = threading.Thread(target=serve)
    t.start()
    with pytest.raises(CertificateError, match="TLS handshake with guest"):
        connect(listener.address, stranger, "guest", timeout=5)
    t.join(5)
    listener.close()
    assert errors and "certificate" in errors[0].hint


def test_key_that_does_not_match_certificate_is_a_clear_error(pki: dict[str, TlsFiles]) -> None:
    mixed = TlsFiles(pki["host"].ca, pki["host"].cert, pki["guest"].key)
    with pytest.raises(KeyMismatch, match="does not match certificate"):
        Listener("127.0.0.1:0", mixed)
