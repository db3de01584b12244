"""TLS for the Flower traffic of a horizontal FederatedJob: which files to use and whether they work.

The control plane mints a PKI per launch and hands every task its identity in the environment
(``privacy/federation.py``); the SuperLink serves its one port (Fleet, Control and ServerAppIo
APIs) with the server's certificate, and the SuperNodes, the SuperExec and the ServerApp verify
it against the job's CA. Plaintext is possible only when a developer asks for it (``--insecure``).

Why a handshake of our own before Flower's: Flower's HTTP clients treat a refused certificate
like a server that is not up yet and retry until their time runs out, so a party with the wrong
CA would sit silent for the whole run timeout. One handshake first turns that into an error that
says what is wrong.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from modelplane.privacy.errors import CertificateError
from modelplane.privacy.federation import TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV, tls_from_env
from modelplane.privacy.tls import TlsFiles, server_context

INSECURE_WARNING = "warning: --insecure: Flower traffic of this task is plaintext (development only)"


@dataclass(frozen=True)
class FlowerTls:
    """The CA a task verifies the SuperLink against, and its own certificate and key when it has them."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def identity(self) -> TlsFiles | None:
        return TlsFiles(self.ca, self.cert, self.key) if self.cert and self.key else None


def add_arguments(ap: argparse.ArgumentParser, *, cert_help: str, insecure_help: str) -> None:
    """The TLS flags every Flower task takes (server and parties alike); ``resolve`` reads them."""
    ap.add_argument(
        "--tls-ca", type=Path, default=None, help=f"the job's CA certificate (default ${TLS_CA_ENV})"
    )
    ap.add_argument("--tls-cert", type=Path, default=None, help=f"{cert_help} (default ${TLS_CERT_ENV})")
    ap.add_argument("--tls-key", type=Path, default=None, help=f"its private key (default ${TLS_KEY_ENV})")
    ap.add_argument(
        "--insecure", action="store_true", help=f"{insecure_help}: development only, never the default"
    )


def resolve(
    *,
    insecure: bool,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    name: str,
    need_key: bool,
    directory: Path,
) -> FlowerTls | None:
    """The TLS files a Flower task uses: flags first, else what the control plane issued; None = plaintext.

    ``need_key``: the task serves TLS itself (the SuperLink) and so needs its certificate and key,
    not only the CA that a client verifies against. ``directory``: where the issued identity is
    written (the key readable by its owner only); the caller removes it when the task ends.
    """
    given = [p for p in (ca, cert, key) if p is not None]
    if insecure:
        if given:
            raise CertificateError(
                "--insecure contradicts --tls-ca/--tls-cert/--tls-key",
                hint="drop --insecure to use TLS, or the TLS files to run in plaintext",
            )
        return None
    if given:
        if ca is None or (cert is None) != (key is None) or (need_key and cert is None):
            wanted = (
                "--tls-ca, --tls-cert and --tls-key"
                if need_key
                else "--tls-ca (with both --tls-cert and --tls-key, or neither)"
            )
            raise CertificateError(
                f"incomplete TLS files: give {wanted}",
                hint="or run as a FederatedJob task, "
                f"where the control plane sets {TLS_CA_ENV}, {TLS_CERT_ENV} and {TLS_KEY_ENV}",
            )
        for path in given:
            if not path.is_file():
                raise CertificateError(
                    f"TLS file {path} does not exist", hint="check --tls-ca/--tls-cert/--tls-key"
                )
        return FlowerTls(ca, cert, key)
    files = tls_from_env(directory=directory, name=name)
    if files is None:
        raise CertificateError(
            f"no TLS identity: {TLS_CA_ENV}, {TLS_CERT_ENV} and {TLS_KEY_ENV} are not set",
            hint="run this as a FederatedJob task (the control plane issues them), pass --tls-ca/--tls-cert/--tls-key, "
            "or --insecure for a plaintext development run",
        )
    return FlowerTls(files.ca, files.cert, files.key)


def check_server_identity(files: TlsFiles) -> None:
    """Fail now, clearly, if the SuperLink's key does not match its certificate (uvicorn would just exit)."""
    server_context(files)


def _describe(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its certificate did not verify ({exc.verify_message or exc.reason})"
    if exc.reason == "WRONG_VERSION_NUMBER":
        return "it did not answer in TLS (is the server running with --insecure?)"
    return str(exc.reason or exc)


def check_superlink(address: str, ca: Path, *, wait_s: float) -> None:
    """One TLS handshake with the SuperLink at HOST:PORT, verified against ``ca`` and the host name.

    Waits up to ``wait_s`` for the SuperLink to listen (the parties may start first). Raises
    :class:`CertificateError` naming the problem: a certificate from another CA, one that does
    not name ``host``, or a server that does not speak TLS.
    """
    host, _, port_s = address.rpartition(":")
    host = host.strip("[]")
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + wait_s
    while True:
        try:
            raw = socket.create_connection((host, int(port_s)), timeout=10)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise CertificateError(
                    f"the SuperLink at {address} did not answer within {wait_s:g}s: {exc}",
                    hint="check --superlink / MASTER_ADDR:MASTER_PORT",
                ) from None
            time.sleep(0.2)
    try:
        with ctx.wrap_socket(raw, server_hostname=host):
            return
    except ssl.SSLError as exc:
        why = _describe(exc)
        if isinstance(exc, ssl.SSLCertVerificationError) and "mismatch" in why.lower():
            hint = f"the server's certificate must name {host}; connect to an address its certificate lists"
        elif isinstance(exc, ssl.SSLCertVerificationError):
            hint = (
                "the SuperLink's certificate is not signed by this party's CA: both tasks need the "
                f"identity the control plane issued for the same launch ({TLS_CA_ENV}, or --tls-ca)"
            )
        else:
            hint = "start the server and the parties both with TLS (or, for development only, both with --insecure)"
        raise CertificateError(
            f"refused the SuperLink at {address}: TLS handshake failed: {why}", hint=hint
        ) from None
    except OSError as exc:
        raise CertificateError(
            f"the SuperLink at {address} closed the connection during the TLS handshake: {exc}",
            hint="check that the server is the SuperLink of this job",
        ) from None
    finally:
        raw.close()


def warn_insecure() -> None:
    print(INSECURE_WARNING, file=sys.stderr, flush=True)
