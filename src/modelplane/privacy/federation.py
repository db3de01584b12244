"""A federation task's side of what the control plane issues at launch: the job's address book
and this task's identity (see ``control/federation.py``, which writes them).

``from_env`` turns the environment into a role name, peer addresses and TLS files a task can use;
the private key is written to a directory only its owner can read.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from modelplane.privacy.errors import CertificateError
from modelplane.privacy.tls import PemIdentity, TlsFiles, write_identity

FEDERATION_ENDPOINTS_ENV = "MODELPLANE_FEDERATION_ENDPOINTS"  # JSON {role: "host:port"}
FEDERATION_ROLE_ENV = "MODELPLANE_FEDERATION_ROLE"
TLS_CA_ENV = "MODELPLANE_TLS_CA_PEM"
TLS_CERT_ENV = "MODELPLANE_TLS_CERT_PEM"
TLS_KEY_ENV = "MODELPLANE_TLS_KEY_PEM"
SERVER_ROLE = "server"


@dataclass(frozen=True)
class FederationTask:
    role: str
    endpoints: dict[str, str]
    tls: TlsFiles

    def address_of(self, role: str) -> str:
        try:
            return self.endpoints[role]
        except KeyError:
            raise CertificateError(
                f"this federation has no role {role!r} (roles: {', '.join(sorted(self.endpoints))})",
                hint="name the parties in spec.parties as the program expects", field="parties") from None


def from_env(env: Mapping[str, str] | None = None, directory: Path | None = None) -> FederationTask:
    """The task's role, the job's address book and its TLS files, from what the control plane set."""
    env = os.environ if env is None else env
    missing = [k for k in (FEDERATION_ROLE_ENV, FEDERATION_ENDPOINTS_ENV, TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV)
               if not env.get(k)]
    if missing:
        raise CertificateError(f"{', '.join(missing)} not set",
                               hint="run this as a FederatedJob task: the control plane sets them at launch")
    try:
        endpoints = json.loads(env[FEDERATION_ENDPOINTS_ENV])
    except ValueError as exc:
        raise CertificateError(f"{FEDERATION_ENDPOINTS_ENV} is not JSON: {exc}") from exc
    role = env[FEDERATION_ROLE_ENV]
    where = directory or Path(tempfile.mkdtemp(prefix=f"modelplane-{role}-tls-"))  # mkdtemp: mode 0700
    identity = PemIdentity(ca=env[TLS_CA_ENV], cert=env[TLS_CERT_ENV], key=env[TLS_KEY_ENV])
    return FederationTask(role=role, endpoints={str(k): str(v) for k, v in endpoints.items()},
                          tls=write_identity(identity, where, role))
