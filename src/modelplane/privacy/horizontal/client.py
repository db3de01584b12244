"""A party task of a horizontal FederatedJob: a Flower SuperNode that trains on this party's shard.

The SuperNode (``supernode.py``: Flower's, with the ClientApp run warm in its own process)
connects to the server task's SuperLink (MASTER_ADDR:MASTER_PORT by default), runs the ClientApp
for each message and keeps this party's shard on this party's placement: only
(masked) model parameters leave it. The task ends when the server says the run is over (the
ClientApp touches a done file), so the job's tasks finish together.

``python -m modelplane.privacy.horizontal.client --party NAME --data shard.npz
[--superlink HOST:PORT] [--timeout 1800]``

Flower traffic is TLS: the SuperLink's certificate is verified against the job's CA (issued by the
control plane in ``$MODELPLANE_TLS_CA_PEM``, or ``--tls-ca``) before the SuperNode starts, so a
mismatch is an error naming it rather than a party that waits silently; ``--insecure`` (plaintext)
only when asked for.

Exit status 0: the run finished; 1: the SuperNode died, the run never finished, or the SuperLink's
certificate was refused; 2: bad arguments (including no TLS identity and no ``--insecure``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from modelplane.privacy.errors import PrivacyError
from modelplane.privacy.horizontal import transport
from modelplane.privacy.horizontal.data import read_shard
from modelplane.privacy.horizontal.procs import stop_process

FAULTS = ("nan", "scale", "shape", "masked-shape", "masked-range", "stall-masking")


def _fault(value: str) -> str:
    """``--inject-fault``: one of FAULTS, or stall-masking:N (stall in round N only)."""
    from modelplane.privacy.horizontal.clientapp import stall_round

    try:
        if value in ("", *FAULTS) or stall_round(value) is not None:
            return value
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    raise argparse.ArgumentTypeError(f"unknown fault {value!r}; one of {', '.join(FAULTS)}, stall-masking:N")


def _exit_on_signal(signum: int, frame: object) -> None:
    """SIGTERM (a stopped job) unwinds normally, so the SuperNode is stopped too."""
    raise SystemExit(128 + signum)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _tls_args(tls: transport.FlowerTls | None) -> list[str]:
    """The SuperNode's TLS flags: the CA for the SuperLink, and this party's identity for the Runtime
    API its ClientApp executor talks to (loopback, but still Flower traffic carrying the model)."""
    if tls is None:
        return ["--insecure"]
    args = ["--root-certificates", str(tls.ca)]
    identity = tls.identity()
    if identity is not None:
        args += [
            "--ssl-certfile",
            str(identity.cert),
            "--ssl-keyfile",
            str(identity.key),
            "--ssl-ca-certfile",
            str(identity.ca),
        ]
    return args


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Flower SuperNode for one party of a horizontal FederatedJob")
    ap.add_argument("--party", required=True, help="this party's name, as the server reports it")
    ap.add_argument("--data", required=True, type=Path, help="this party's shard (.npz with x, y)")
    ap.add_argument("--superlink", default=None, help="HOST:PORT (default $MASTER_ADDR:$MASTER_PORT)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument(
        "--server-grace",
        type=float,
        default=60.0,
        help="give up when the SuperLink has been unreachable this long",
    )
    transport.add_arguments(
        ap,
        cert_help="this party's certificate, for its SuperNode's local Runtime API",
        insecure_help="talk to the SuperLink in plaintext",
    )
    ap.add_argument(
        "--inject-fault",
        default="",
        type=_fault,
        help="misbehave on purpose, to exercise the server's screening (testing only): one of "
        + ", ".join(FAULTS)
        + ", stall-masking:N",
    )
    a = ap.parse_args(argv)
    superlink = (
        a.superlink or f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{os.environ.get('MASTER_PORT', '9092')}"
    )
    if not superlink.rpartition(":")[2].isdigit():
        print(f"error: --superlink must be HOST:PORT, got {superlink!r}", file=sys.stderr)
        return 2
    try:
        read_shard(a.data)  # fail here, clearly, rather than inside the ClientApp
    except PrivacyError as exc:
        print(f"error: {exc}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 2
    if importlib.util.find_spec("flwr") is None:
        print(
            "error: Flower (flwr) is not installed; install the privacy extra: pip install 'modelplane[privacy]'",
            file=sys.stderr,
        )
        return 2
    work = Path(tempfile.mkdtemp(prefix=f"supernode-{a.party}-"))
    try:
        tls = transport.resolve(
            insecure=a.insecure,
            ca=a.tls_ca,
            cert=a.tls_cert,
            key=a.tls_key,
            name=a.party,
            need_key=False,
            directory=work / "tls",
        )
    except PrivacyError as exc:
        shutil.rmtree(work, ignore_errors=True)
        print(f"error: {exc}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 2
    try:
        if tls is None:
            transport.warn_insecure()
        else:  # a wrong CA or a plaintext server: say so now, not after Flower has retried for the whole run
            transport.check_superlink(superlink, tls.ca, wait_s=a.server_grace)
    except PrivacyError as exc:
        shutil.rmtree(work, ignore_errors=True)
        print(f"error: party {a.party}: {exc}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 1
    done = work / "done"
    node_config = " ".join(
        [
            f'party="{a.party}"',
            f'shard="{a.data.resolve()}"',
            f'done-file="{done}"',
            f'fault="{a.inject_fault}"',
            f"seed={a.seed}",
        ]
    )
    env = dict(os.environ, FLWR_HOME=str(work))
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # The SuperNode runs this party's ClientApp in its own process, warm (see supernode.py).
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "modelplane.privacy.horizontal.supernode",
            *_tls_args(tls),
            "--superlink",
            superlink,
            "--node-config",
            node_config,
            "--max-wait-time",
            str(int(a.timeout)),
        ],
        env=env,
    )  # our process group: killing this task kills its SuperNode too
    deadline = time.monotonic() + a.timeout
    host, _, port = superlink.rpartition(":")
    last_seen, next_check = time.monotonic(), 0.0
    try:
        while not done.exists():
            now = time.monotonic()
            if now >= next_check:  # a server that is gone will never say the run is over
                next_check = now + 5
                if _reachable(host, int(port)):
                    last_seen = now
                elif now - last_seen > a.server_grace:
                    print(
                        f"error: party {a.party}: the SuperLink at {superlink} has been unreachable for "
                        f"{a.server_grace:g}s",
                        file=sys.stderr,
                    )
                    return 1
            if proc.poll() is not None:
                print(
                    f"error: the SuperNode of party {a.party} exited with status {proc.returncode}",
                    file=sys.stderr,
                )
                return 1
            if time.monotonic() > deadline:
                print(
                    f"error: party {a.party}: the run did not finish within {a.timeout:g}s", file=sys.stderr
                )
                return 1
            time.sleep(0.5)
        # Our SuperNode still has to push the reply to "finished": stopping it now would leave the
        # server waiting for that reply. Stay until the server has shut down (or a while).
        linger = time.monotonic() + 30
        while time.monotonic() < linger and proc.poll() is None and _reachable(host, int(port)):
            time.sleep(1)
        print(f"party {a.party}: run finished", flush=True)
        return 0
    finally:
        stop_process(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
