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
                hint="name the parties in spec.parties as the program expects",
                field="parties",
            ) from None


def identity_env(role: str, endpoints: Mapping[str, str], identity: PemIdentity) -> dict[str, str]:
    """The environment that hands ``identity`` to a task playing ``role`` (what ``from_env`` reads)."""
    return {
        FEDERATION_ROLE_ENV: role,
        FEDERATION_ENDPOINTS_ENV: json.dumps(dict(endpoints), sort_keys=True),
        TLS_CA_ENV: identity.ca,
        TLS_CERT_ENV: identity.cert,
        TLS_KEY_ENV: identity.key,
    }


def tls_from_env(
    env: Mapping[str, str] | None = None, directory: Path | None = None, name: str = "task"
) -> TlsFiles | None:
    """Only the TLS files the control plane issued, for a task that finds its peers by other means.

    None when none of the three is set (the task was not launched as part of a federation);
    an error when only some are, since that is a broken launch rather than an opt-out.
    """
    env = os.environ if env is None else env
    keys = (TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV)
    missing = [k for k in keys if not env.get(k)]
    if len(missing) == len(keys):
        return None
    if missing:
        raise CertificateError(
            f"{', '.join(missing)} not set while the other TLS variables are",
            hint="the control plane sets all three at launch; set none or all of them",
        )
    where = directory or Path(tempfile.mkdtemp(prefix=f"modelplane-{name}-tls-"))  # mkdtemp: mode 0700
    return write_identity(
        PemIdentity(ca=env[TLS_CA_ENV], cert=env[TLS_CERT_ENV], key=env[TLS_KEY_ENV]), where, name
    )


def from_env(env: Mapping[str, str] | None = None, directory: Path | None = None) -> FederationTask:
    """The task's role, the job's address book and its TLS files, from what the control plane set."""
    env = os.environ if env is None else env
    missing = [
        k
        for k in (FEDERATION_ROLE_ENV, FEDERATION_ENDPOINTS_ENV, TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV)
        if not env.get(k)
    ]
    if missing:
        raise CertificateError(
            f"{', '.join(missing)} not set",
            hint="run this as a FederatedJob task: the control plane sets them at launch",
        )
    try:
        endpoints = json.loads(env[FEDERATION_ENDPOINTS_ENV])
    except ValueError as exc:
        raise CertificateError(f"{FEDERATION_ENDPOINTS_ENV} is not JSON: {exc}") from exc
    role = env[FEDERATION_ROLE_ENV]
    where = directory or Path(tempfile.mkdtemp(prefix=f"modelplane-{role}-tls-"))  # mkdtemp: mode 0700
    identity = PemIdentity(ca=env[TLS_CA_ENV], cert=env[TLS_CERT_ENV], key=env[TLS_KEY_ENV])
    return FederationTask(
        role=role,
        endpoints={str(k): str(v) for k, v in endpoints.items()},
        tls=write_identity(identity, where, role),
    )
