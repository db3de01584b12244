"""A vertical-LR role as a FederatedJob task: addresses and certificates from the control plane.

The job controller hands every task of a FederatedJob the job's address book and an identity from
a PKI minted for this launch (``privacy/federation.py``). Roles map onto the job's pod sets: the
arbiter is the ``server`` task (it listens on MASTER_PORT), the guest and the host are the parties
named ``guest`` and ``host`` (the guest listens on its MODELPLANE_PORT). Parties may run on
different nodes; nothing is shared between them but the network.

``python -m modelplane.privacy.vertical.job arbiter [--key-bits 2048]``
``python -m modelplane.privacy.vertical.job guest --data guest.csv [--epochs 5 --output guest.json ...]``
``python -m modelplane.privacy.vertical.job host --data host.csv``

Extra arguments after the role's own go to the role unchanged (see ``vertical/cli.py``).
"""

from __future__ import annotations

import argparse
import sys

from modelplane.core.errors import ModelplaneError
from modelplane.privacy.errors import CertificateError
from modelplane.privacy.federation import SERVER_ROLE, FederationTask, from_env
from modelplane.privacy.vertical import cli

ROLES = ("arbiter", "guest", "host")


def _tls(task: FederationTask) -> list[str]:
    return ["--ca", str(task.tls.ca), "--cert", str(task.tls.cert), "--key", str(task.tls.key)]


def _port(address: str) -> str:
    return address.rpartition(":")[2]


def role_argv(role: str, task: FederationTask, rest: list[str]) -> list[str]:
    """The role's own command line from the job's address book."""
    expected = SERVER_ROLE if role == "arbiter" else role
    if task.role != expected:
        raise CertificateError(
            f"this task holds the identity of {task.role!r} but runs the {role} role",
            hint=f"run the {role} role in the task the job names {expected!r}", field="role")
    if role == "arbiter":
        return [*_tls(task), "--listen", f"0.0.0.0:{_port(task.address_of(SERVER_ROLE))}", *rest]
    arbiter = task.address_of(SERVER_ROLE)
    if role == "guest":
        return [*_tls(task), "--arbiter", arbiter, "--listen", f"0.0.0.0:{_port(task.address_of('guest'))}", *rest]
    return [*_tls(task), "--arbiter", arbiter, "--guest", task.address_of("guest"), *rest]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m modelplane.privacy.vertical.job",
                                 description="one hetero-LR role as a FederatedJob task")
    ap.add_argument("role", choices=ROLES)
    a, rest = ap.parse_known_args(argv)
    try:
        result = cli.run(a.role, role_argv(a.role, from_env(), rest))
    except ModelplaneError as exc:
        print(f"{a.role}: error: {exc}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 2
    if a.role == "guest":
        print(f"guest: test AUC {result.get('test_auc')}, train AUC {result.get('train_auc')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
