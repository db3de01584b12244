"""Run a horizontal federation as local processes, the way a FederatedJob's tasks run.

One server task (SuperLink + ServerApp) and one task per party (SuperNode + ClientApp), each a
separate process talking over TCP on this machine. Used by the tests and the benchmark; the
control plane launches the same two commands through its backends. As there, every task gets its
identity from a PKI minted for this launch (``MODELPLANE_TLS_*``), so the Flower traffic is TLS.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelplane.privacy.errors import PrivacyError
from modelplane.privacy.federation import SERVER_ROLE, identity_env
from modelplane.privacy.tls import PemIdentity, mint_pki


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Federation:
    """The running processes of one local federation."""

    workdir: Path
    server: subprocess.Popen[bytes]
    parties: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def metrics(self) -> list[dict[str, Any]]:
        path = self.workdir / "out" / "metrics.json"
        try:
            return list(json.loads(path.read_text()))
        except (OSError, ValueError):
            return []

    def kill_party(self, name: str) -> None:
        """SIGKILL a party's whole process group (its SuperNode and ClientApp too): a crash."""
        proc = self.parties[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for proc in [*self.parties.values(), self.server]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def base_env() -> dict[str, str]:
    # As the local backend does: the caller's MODELPLANE_* settings (a registry URL, a rounds count)
    # are the platform's to hand out, not something a hand-run federation should pick up.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLANE_")}
    src = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", os.defpath)  # flwr-* helpers of this environment
    env["PYTHONUNBUFFERED"] = "1"
    return env


def mint(parties: list[str]) -> dict[str, PemIdentity]:
    """A launch's PKI as the control plane mints it: one identity for ``server`` and one per party."""
    return mint_pki([SERVER_ROLE, *parties])


def start(
    workdir: Path,
    shards: dict[str, Path],
    test_data: Path,
    *,
    server_args: list[str] | None = None,
    party_args: dict[str, list[str]] | None = None,
    port: int | None = None,
    party_port: int | None = None,
    pki: dict[str, PemIdentity] | None = None,
) -> Federation:
    """Start the server and one process per party; logs go to ``workdir/<name>.log``.

    ``party_port``: where the parties connect, when something (a recording proxy) sits in front
    of the server's ``port``. ``pki``: the identities to hand out (default: minted here).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    party_port = party_port or port
    base = base_env()
    pki = pki or mint(list(shards))
    book = {SERVER_ROLE: f"127.0.0.1:{party_port}"}
    py = [sys.executable, "-m", "modelplane.privacy.horizontal."]

    def launch(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        env = base | identity_env(name, book, pki[name])
        log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        try:
            return subprocess.Popen(
                [py[0], py[1], py[2] + argv[0], *argv[1:]],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    server = launch(
        SERVER_ROLE,
        [
            "server",
            "--listen",
            f"127.0.0.1:{port}",
            "--test-data",
            str(test_data),
            "--output-dir",
            str(workdir / "out"),
            "--min-parties",
            str(len(shards)),
            *(server_args or []),
        ],
    )
    fed = Federation(workdir, server)
    for i, (name, shard) in enumerate(shards.items()):
        fed.parties[name] = launch(
            name,
            [
                "client",
                "--party",
                name,
                "--data",
                str(shard),
                "--seed",
                str(i),
                "--superlink",
                f"127.0.0.1:{party_port}",
                *(party_args or {}).get(name, []),
            ],
        )
    return fed


def wait(fed: Federation, timeout: float, until: Callable[[Federation], bool] | None = None) -> bool:
    """Wait for the server to exit (or ``until`` to hold); False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until is not None and until(fed):
            return True
        if until is None and fed.server.poll() is not None:
            return True
        time.sleep(0.2)
    return False


def run(
    workdir: Path,
    shards: dict[str, Path],
    test_data: Path,
    *,
    timeout: float = 900.0,
    server_args: list[str] | None = None,
) -> dict[str, Any]:
    """Run a federation to the end; the server's summary plus per-round metrics."""
    fed = start(workdir, shards, test_data, server_args=server_args)
    try:
        if not wait(fed, timeout):
            raise PrivacyError(f"the federation did not finish within {timeout:g}s; logs in {workdir}")
        if fed.server.returncode != 0:
            tail = (workdir / "server.log").read_text(errors="replace")[-2000:]
            raise PrivacyError(f"the server exited with {fed.server.returncode}: {tail}")
        summary = json.loads((workdir / "out" / "summary.json").read_text())
        summary["metrics"] = fed.metrics()
        return dict(summary)
    finally:
        fed.stop()
