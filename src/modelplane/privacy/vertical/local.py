"""Run the three hetero-LR roles as separate local processes, as a FederatedJob's tasks would be.

This is the reference for how the control plane should launch the parties: one process per role,
each with its own certificate, the arbiter and guest publishing their bound address via
``--ready-file``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from modelplane.privacy.errors import PrivacyError
from modelplane.privacy.tls import TlsFiles, make_throwaway_pki


def _tls_args(files: TlsFiles) -> list[str]:
    return ["--ca", str(files.ca), "--cert", str(files.cert), "--key", str(files.key)]


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise PrivacyError(f"{path.stem} exited with {proc.returncode} before listening")
        if time.monotonic() > deadline:
            raise PrivacyError(f"{path.stem} did not start listening within {timeout}s")
        time.sleep(0.05)
    return path.read_text()


def run_local(
    workdir: Path, host_csv: Path, guest_csv: Path, *, key_bits: int = 1024, psi_bits: int = 1024,
    epochs: int = 3, batch_size: int = 64, timeout: float = 600.0, extra_guest_args: list[str] | None = None,
) -> dict[str, Any]:
    """Start arbiter, guest and host processes; return their JSON results keyed by role."""
    workdir.mkdir(parents=True, exist_ok=True)
    pki = make_throwaway_pki(workdir / "pki", ["arbiter", "guest", "host"])
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    py = [sys.executable, "-m"]
    mod = "modelplane.privacy.vertical."
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["arbiter"] = subprocess.Popen(
            [*py, mod + "arbiter", *_tls_args(pki["arbiter"]), "--key-bits", str(key_bits),
             "--ready-file", str(workdir / "arbiter.addr"), "--output", str(workdir / "arbiter.json")], env=env)
        arbiter = _wait_for(workdir / "arbiter.addr", procs["arbiter"], 60)
        procs["guest"] = subprocess.Popen(
            [*py, mod + "guest", *_tls_args(pki["guest"]), "--arbiter", arbiter, "--data", str(guest_csv),
             "--ready-file", str(workdir / "guest.addr"), "--output", str(workdir / "guest.json"),
             "--epochs", str(epochs), "--batch-size", str(batch_size), "--psi-bits", str(psi_bits),
             *(extra_guest_args or [])], env=env)
        guest = _wait_for(workdir / "guest.addr", procs["guest"], 60)
        procs["host"] = subprocess.Popen(
            [*py, mod + "host", *_tls_args(pki["host"]), "--arbiter", arbiter, "--guest", guest,
             "--data", str(host_csv), "--output", str(workdir / "host.json")], env=env)
        deadline = time.monotonic() + timeout
        for role, proc in procs.items():
            code = proc.wait(max(1.0, deadline - time.monotonic()))
            if code != 0:
                raise PrivacyError(f"the {role} process exited with status {code}", hint="see its stderr above")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {role: json.loads((workdir / f"{role}.json").read_text()) for role in procs}
