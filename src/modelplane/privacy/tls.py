"""Mutually authenticated TLS channels carrying length-prefixed JSON messages between parties.

Every federated party (host, guest, arbiter) holds a certificate signed by the job's CA; a peer
without one is refused at the handshake, so a message can always be attributed to a named party.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelplane.privacy.errors import CertificateError, KeyMismatch, MalformedMessage

_MAX_FRAME = 256 * 1024 * 1024


@dataclass(frozen=True)
class TlsFiles:
    """Paths of one party's PEM files: the CA certificate, its own certificate and private key."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class PemIdentity:
    """One party's identity as PEM text: what the control plane hands a federation task."""

    ca: str
    cert: str
    key: str


def mint_pki(names: list[str], hosts: list[str] | None = None, *, now: _dt.datetime | None = None,
             days: int = 1) -> dict[str, PemIdentity]:
    """A fresh CA and one certificate per name (CN = name), all in memory.

    The CA's private key is dropped on return: nobody can mint another certificate for this set,
    so a party from another job (another CA) is refused at the handshake. ``hosts`` are the DNS
    names or IP addresses the parties are reached at (SANs; clients verify them), besides
    localhost/127.0.0.1.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    start = (now or _dt.datetime.now(_dt.UTC)) - _dt.timedelta(minutes=5)
    end = start + _dt.timedelta(days=days)
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    for host in dict.fromkeys(hosts or []):
        try:
            ip = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            if x509.DNSName(host) not in sans:
                sans.append(x509.DNSName(host))
            continue
        if ip not in sans:
            sans.append(ip)

    def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelplane-privacy-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    out: dict[str, PemIdentity] = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        out[name] = PemIdentity(ca=ca_pem, cert=cert.public_bytes(serialization.Encoding.PEM).decode(),
                                key=_key_pem(key))
    return out


def write_identity(identity: PemIdentity, directory: Path, name: str) -> TlsFiles:
    """The PEM files of one identity in ``directory`` (the key readable by its owner only)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, cert, key = directory / "ca.pem", directory / f"{name}.pem", directory / f"{name}.key"
    ca.write_text(identity.ca)
    cert.write_text(identity.cert)
    key.touch(mode=0o600)
    key.chmod(0o600)
    key.write_text(identity.key)
    return TlsFiles(ca=ca, cert=cert, key=key)


def make_throwaway_pki(directory: Path, names: list[str], *, now: _dt.datetime | None = None) -> dict[str, TlsFiles]:
    """Create a CA and one cert per party (CN=name, SAN 127.0.0.1/localhost) for tests and demos."""
    return {name: write_identity(identity, directory, name)
            for name, identity in mint_pki(names, now=now).items()}


def _context(files: TlsFiles, purpose: ssl.Purpose) -> ssl.SSLContext:
    ctx = ssl.create_default_context(purpose, cafile=str(files.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(str(files.cert), str(files.key))
    except ssl.SSLError as exc:
        raise KeyMismatch(
            f"private key {files.key} does not match certificate {files.cert}",
            hint="pass the key that was generated together with this certificate",
        ) from exc
    except FileNotFoundError as exc:
        raise CertificateError(f"TLS file not found: {exc.filename}", hint="check --ca/--cert/--key") from exc
    return ctx


def server_context(files: TlsFiles) -> ssl.SSLContext:
    return _context(files, ssl.Purpose.CLIENT_AUTH)


def client_context(files: TlsFiles) -> ssl.SSLContext:
    return _context(files, ssl.Purpose.SERVER_AUTH)


class Channel:
    """One TLS connection to a named peer; sends and receives JSON objects with a ``kind`` field.

    ``on_send`` sees every outgoing message (as bytes) so tests can inspect what crosses the wire.
    """

    def __init__(self, sock: ssl.SSLSocket, peer: str, on_send: Callable[[str, bytes], None] | None = None):
        self.sock = sock
        self.peer = peer
        self.on_send = on_send
        self.bytes_sent = 0
        self.bytes_received = 0

    def peer_common_name(self) -> str:
        cert: dict[str, Any] = dict(self.sock.getpeercert() or {})
        for rdn in cert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        return ""

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        if self.on_send is not None:
            self.on_send(self.peer, data)
        self.sock.sendall(struct.pack(">I", len(data)) + data)
        self.bytes_sent += len(data) + 4

    def recv(self) -> dict[str, Any]:
        (length,) = struct.unpack(">I", self._read(4))
        if length > _MAX_FRAME:
            raise MalformedMessage(f"{self.peer} sent a frame of {length} bytes", field=self.peer)
        data = self._read(length)
        self.bytes_received += length + 4
        try:
            message = json.loads(data)
        except ValueError as exc:
            raise MalformedMessage(f"{self.peer} sent invalid JSON", field=self.peer) from exc
        if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
            raise MalformedMessage(f"{self.peer} sent a message without a kind", field=self.peer)
        return message

    def _read(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise MalformedMessage(f"{self.peer} closed the connection mid-message", field=self.peer)
            buf.extend(chunk)
        return bytes(buf)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise MalformedMessage(f"address {text!r} is not HOST:PORT", hint="e.g. 127.0.0.1:9443", field="address")
    return host, int(port)


def connect(address: str, files: TlsFiles, peer: str, *, timeout: float = 30.0,
            on_send: Callable[[str, bytes], None] | None = None) -> Channel:
    """Connect to ``peer`` at HOST:PORT, retrying until it listens or ``timeout`` passes."""
    import time

    host, port = parse_address(address)
    ctx = client_context(files)
    deadline = time.monotonic() + timeout
    while True:
        try:
            raw = socket.create_connection((host, port), timeout=timeout)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        sock = ctx.wrap_socket(raw, server_hostname=host)
    except ssl.SSLError as exc:
        raise CertificateError(
            f"TLS handshake with {peer} at {address} failed: {exc.reason}",
            hint="both parties need certificates signed by the same job CA",
            field=peer,
        ) from exc
    sock.settimeout(None)
    return Channel(sock, peer, on_send)


class Listener:
    """A TLS server socket; ``accept`` returns a channel named after the client's certificate CN."""

    def __init__(self, address: str, files: TlsFiles, on_send: Callable[[str, bytes], None] | None = None):
        host, port = parse_address(address)
        self.ctx = server_context(files)
        self.sock = socket.create_server((host, port))
        self.on_send = on_send

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    def accept(self) -> Channel:
        raw, _ = self.sock.accept()
        try:
            sock = self.ctx.wrap_socket(raw, server_side=True)
        except ssl.SSLError as exc:
            raw.close()
            raise CertificateError(
                f"refused a client at the TLS handshake: {exc.reason}",
                hint="the client needs a certificate signed by the job CA",
            ) from exc
        channel = Channel(sock, "?", self.on_send)
        channel.peer = channel.peer_common_name() or "unknown"
        return channel

    def close(self) -> None:
        self.sock.close()
