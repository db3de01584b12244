"""What the tasks of a FederatedJob need to find and trust each other, issued at launch.

Parties of a federation talk to each other directly (the vertical-LR guest listens for the host,
every party dials the server), so each needs the others' addresses and a certificate they accept.
The job controller knows where every task was placed and picks their ports, and its backend says
at which address each task will be dialled (``Backend.task_hosts``: a Ray node's IP, a pod's DNS
name under the job's headless Service), so it hands out both, with those addresses as they are:
an address book of the job's roles and a per-launch PKI (a fresh CA whose key is dropped at once,
one certificate per role). No directory shared between the tasks is needed, so the parties may run
on different nodes, and a certificate of another job, or of an earlier attempt, is refused.

The identity travels in the task's environment, like the rest of its launch settings; the
Kubernetes backend renders it into the pod spec (a per-job Secret would be the better home there).
"""

from __future__ import annotations

import json

from modelplane.privacy.federation import (
    FEDERATION_ENDPOINTS_ENV,
    FEDERATION_ROLE_ENV,
    TLS_CA_ENV,
    TLS_CERT_ENV,
    TLS_KEY_ENV,
)

PARTY_PREFIX = "party-"


def role_of(pod_set: str) -> str:
    """A federation role from its pod set: ``server``, or the party's name."""
    return pod_set.removeprefix(PARTY_PREFIX)


def federation_env(addresses: dict[str, tuple[str, int]]) -> dict[str, dict[str, str]]:
    """Per pod set, the environment that lets it reach and authenticate the others.

    ``addresses`` maps each pod set (``server``, ``party-<name>``) to the host the others dial it
    at and the port it listens on. The certificates name every one of those hosts (a client checks
    the name it dialled against them), so they must be the final addresses, not placeholders that
    a backend rewrites after minting.
    """
    from modelplane.privacy.tls import mint_pki  # cryptography: loaded when a federation launches

    roles = {pod_set: role_of(pod_set) for pod_set in addresses}
    book = json.dumps(
        {roles[p]: f"{host}:{port}" for p, (host, port) in sorted(addresses.items())}, sort_keys=True
    )
    identities = mint_pki(sorted(roles.values()), hosts=sorted({host for host, _ in addresses.values()}))
    return {
        pod_set: {
            FEDERATION_ROLE_ENV: role,
            FEDERATION_ENDPOINTS_ENV: book,
            TLS_CA_ENV: identities[role].ca,
            TLS_CERT_ENV: identities[role].cert,
            TLS_KEY_ENV: identities[role].key,
        }
        for pod_set, role in roles.items()
    }
