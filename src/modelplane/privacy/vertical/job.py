"""A vertical-LR role as a FederatedJob task: per-job PKI and addresses found by rendezvous.

Why a rendezvous directory: the control plane gives a job one address (MASTER_ADDR:MASTER_PORT,
the arbiter, which runs as the ``server`` pod set), but the guest listens too, and all three roles
need certificates from the same per-job CA. The arbiter task mints that CA and the three role
certificates (``tls.make_throwaway_pki``) into ``RENDEZVOUS/<job id>/pki`` when the job starts, so
every job has its own PKI and a certificate of another job is refused; each listening role writes
its bound address there. This needs a directory all the job's tasks can read: true of the local
backend (one machine); on a cluster it would be a shared volume or, better, a per-job Secret the
control plane mounts (not done here).

``python -m modelplane.privacy.vertical.job arbiter --rendezvous DIR [--key-bits 2048]``
``python -m modelplane.privacy.vertical.job guest --rendezvous DIR --data guest.csv [--epochs 5 ...]``
``python -m modelplane.privacy.vertical.job host --rendezvous DIR --data host.csv``

Extra arguments after the role's own go to the role unchanged (see ``vertical/cli.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from modelplane.core.errors import ModelplaneError
from modelplane.privacy.errors import PrivacyError
from modelplane.privacy.tls import make_throwaway_pki
from modelplane.privacy.vertical import cli

ROLES = ("arbiter", "guest", "host")


def job_dir(rendezvous: Path) -> Path:
    job = os.environ.get("MODELPLANE_JOB_ID")
    if not job:
        raise PrivacyError("MODELPLANE_JOB_ID is not set", hint="run this as a FederatedJob task, or set it by hand")
    return rendezvous / job


def mint_pki(directory: Path) -> Path:
    """The job's CA and role certificates, published all at once (a rename) so no role sees half."""
    final = directory / "pki"
    if final.is_dir():
        return final
    tmp = directory / f"pki.tmp.{os.getpid()}"
    make_throwaway_pki(tmp, list(ROLES))
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another arbiter attempt won the race
    return final


def _wait_file(path: Path, what: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise PrivacyError(f"{what} did not appear within {timeout:g}s ({path})",
                               hint="check that the job's other tasks started and share the rendezvous directory")
        time.sleep(0.2)
    return path.read_text().strip()


def _tls(pki: Path, role: str) -> list[str]:
    return ["--ca", str(pki / "ca.pem"), "--cert", str(pki / f"{role}.pem"), "--key", str(pki / f"{role}.key")]


def _connectable(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"{os.environ.get('MODELPLANE_ADVERTISE_HOST', '127.0.0.1')}:{port}" if host in ("0.0.0.0", "") else address


def role_argv(role: str, directory: Path, rest: list[str], timeout: float) -> list[str]:
    """The role's own command line, once what it needs from the other roles is there."""
    if role == "arbiter":
        for stale in ("arbiter.addr", "guest.addr"):  # from an earlier attempt of this job
            (directory / stale).unlink(missing_ok=True)
        pki = mint_pki(directory)
        port = os.environ.get("MASTER_PORT", "0")
        return [*_tls(pki, role), "--listen", f"0.0.0.0:{port}", "--ready-file", str(directory / "arbiter.addr"),
                "--output", str(directory / "arbiter.json"), *rest]
    pki = directory / "pki"
    _wait_file(pki / "host.key", "the job's certificates (minted by the arbiter task)", timeout)
    arbiter = _connectable(_wait_file(directory / "arbiter.addr", "the arbiter's address", timeout))
    if role == "guest":
        return [*_tls(pki, role), "--arbiter", arbiter, "--listen", "0.0.0.0:0",
                "--ready-file", str(directory / "guest.addr"), "--output", str(directory / "guest.json"), *rest]
    guest = _connectable(_wait_file(directory / "guest.addr", "the guest's address", timeout))
    return [*_tls(pki, role), "--arbiter", arbiter, "--guest", guest, "--output", str(directory / "host.json"), *rest]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m modelplane.privacy.vertical.job",
                                 description="one hetero-LR role as a FederatedJob task")
    ap.add_argument("role", choices=ROLES)
    ap.add_argument("--rendezvous", type=Path, required=True, help="directory shared by the job's tasks")
    ap.add_argument("--wait", type=float, default=300.0, help="seconds to wait for the other roles")
    a, rest = ap.parse_known_args(argv)
    try:
        directory = job_dir(a.rendezvous)
        directory.mkdir(parents=True, exist_ok=True)
        result = cli.run(a.role, role_argv(a.role, directory, rest, a.wait))
    except ModelplaneError as exc:
        print(f"{a.role}: error: {exc}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 2
    if a.role == "guest":
        print(f"guest: test AUC {result.get('test_auc')}, train AUC {result.get('train_auc')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
