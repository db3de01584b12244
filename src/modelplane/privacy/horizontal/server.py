"""The server task of a horizontal FederatedJob: a Flower SuperLink plus the run submitted to it.

Why one task does both: the control plane gives the server pod set one address (MASTER_ADDR /
MASTER_PORT); the SuperLink serves its Fleet, Control and ServerAppIo APIs on that one HTTP port,
starts the ServerApp as its own subprocess, and this wrapper submits the run (the app bundle in
``app/`` with this job's run config), waits for it to finish and exits with its outcome, so the
job succeeds or fails with the federation.

``python -m modelplane.privacy.horizontal.server --listen 0.0.0.0:$MASTER_PORT --test-data test.npz
--output-dir out/ [--rounds 30 --strategy fedavg|fedprox --no-secagg --min-parties 5 ...]``

All Flower traffic on that port is TLS: the SuperLink serves the certificate the control plane
issued to the server role (``$MODELPLANE_TLS_CERT_PEM`` / ``_KEY_PEM``, whose names are the
address the control plane assigned it, localhost and 127.0.0.1) and hands the job's CA to the SuperExec and ServerApp it starts; ``--tls-*`` give
the files by hand, and ``--insecure`` (plaintext, development only) must be asked for.

Under the platform, the number of rounds comes from the job's ``spec.rounds``
(``$MODELPLANE_FL_ROUNDS``) and the final model is registered in the model registry
(``$MODELPLANE_MODEL_REGISTRY_URL``) as ONNX under the job's name, with the job as its training run
(``register.py``).

Exit status 0: the run completed (``out/summary.json``, ``metrics.json``, ``model.npz``, and when
registered ``model.onnx`` and ``registered.json``); 1: the run failed, or its model could not be
registered (the reason on stderr); 2: bad arguments (including no TLS identity, or a key that
does not match its certificate) or the SuperLink would not start.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelplane.core.errors import ModelplaneError
from modelplane.privacy.errors import PrivacyError
from modelplane.privacy.horizontal import transport
from modelplane.privacy.horizontal.procs import stop_process
from modelplane.privacy.horizontal.register import REGISTRY_URL_ENV, register_from_env

APP_DIR = Path(__file__).resolve().parent / "app"
ROUNDS_ENV = "MODELPLANE_FL_ROUNDS"  # the job controller sets it from the FederatedJob's spec.rounds


def resolve_rounds(flag: int | None, env: str | None, default: int = 30) -> int:
    """The number of rounds: the job's spec (via ``env``) and ``--rounds`` must agree when both are given.

    Why not let one win silently: a manifest whose command says ``--rounds 5`` while its spec says
    ``rounds: 3`` is ambiguous, and whichever won, the job would not do what one of them says.
    """
    spec = None
    if env not in (None, ""):
        try:
            spec = int(env)
        except ValueError:
            raise PrivacyError(
                f"{ROUNDS_ENV}={env!r} is not a whole number",
                hint="set spec.rounds in the FederatedJob to a positive integer",
            ) from None
    if flag is not None and spec is not None and flag != spec:
        raise PrivacyError(
            f"--rounds {flag} contradicts the job's spec.rounds {spec}",
            hint="drop --rounds from the server command; spec.rounds is passed to it",
        )
    rounds = flag if flag is not None else spec if spec is not None else default
    if rounds < 1:
        raise PrivacyError(
            f"rounds must be >= 1, got {rounds}", hint="set spec.rounds (or --rounds) to 1 or more"
        )
    return rounds


def _exit_on_signal(signum: int, frame: object) -> None:
    """SIGTERM (a stopped or cancelled job) unwinds normally, so the SuperLink is stopped too."""
    raise SystemExit(128 + signum)


def _flwr_bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise PrivacyError(
            f"{name} not found", hint="install the privacy extra: pip install 'modelplane[privacy]'"
        )
    return found


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PrivacyError(
                f"the SuperLink exited with status {proc.returncode} before listening on {port}"
            )
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise PrivacyError(f"the SuperLink did not listen on {host}:{port} within {timeout:g}s")


def _control_client(address: str, ca: Path | None) -> Any:
    from flwr.cli.typing import SuperLinkConnection
    from flwr.cli.utils import init_http_client_from_connection

    return init_http_client_from_connection(
        SuperLinkConnection(
            name="modelplane",
            address=address,
            root_certificates=None if ca is None else str(ca),
            insecure=ca is None,
        )
    )


def submit_run(address: str, run_config: dict[str, Any], ca: Path | None) -> int:
    """Submit the app bundle with ``run_config`` to the SuperLink's Control API; the run id."""
    import hashlib

    from flwr.cli.build import build_fab_from_disk
    from flwr.common.serde import fab_to_proto, user_config_to_proto
    from flwr.proto.control_pb2 import StartRunRequest
    from flwr.supercore.fab import Fab

    fab_bytes = build_fab_from_disk(APP_DIR)
    fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})
    client = _control_client(address, ca)
    try:
        res = client.StartRun(
            StartRunRequest(
                fab=fab_to_proto(fab),
                override_config=user_config_to_proto(run_config),
                federation="",
                app_spec="",
            )
        )
    finally:
        client.close()
    if not res.HasField("run_id"):
        raise PrivacyError("the SuperLink did not start the run")
    return int(res.run_id)


def run_status(address: str, run_id: int, ca: Path | None) -> tuple[str, str]:
    """(status text such as ``running`` or ``finished:completed``, details)."""
    from flwr.common.serde import run_from_proto
    from flwr.proto.control_pb2 import ListRunsRequest

    client = _control_client(address, ca)
    try:
        res = client.ListRuns(ListRunsRequest(run_id=run_id))
    finally:
        client.close()
    run = run_from_proto(res.run_dict[run_id])
    status = run.status
    text = status.status + (f":{status.sub_status}" if status.sub_status else "")
    return text, status.details


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Flower SuperLink + ServerApp for a horizontal FederatedJob")
    ap.add_argument(
        "--listen", default=None, help="HOST:PORT for the SuperLink (default 0.0.0.0:$MASTER_PORT)"
    )
    ap.add_argument("--test-data", required=True, type=Path, help="the server's held-out .npz (x, y)")
    ap.add_argument("--output-dir", required=True, type=Path)
    ap.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"federated rounds (default ${ROUNDS_ENV}, which a FederatedJob sets from spec.rounds, else 30)",
    )
    ap.add_argument(
        "--model-name",
        default=None,
        help=f"register the final model under this name (default $MODELPLANE_JOB_NAME) when "
        f"${REGISTRY_URL_ENV} says where the registry is",
    )
    ap.add_argument("--strategy", choices=["fedavg", "fedprox"], default="fedavg")
    ap.add_argument("--proximal-mu", type=float, default=0.01)
    ap.add_argument(
        "--no-secagg", action="store_true", help="plain FedAvg/FedProx (the server sees each update)"
    )
    ap.add_argument("--min-parties", type=int, default=5, help="parties that must join before round 1")
    ap.add_argument("--min-fit-parties", type=int, default=3, help="fewest parties a round may aggregate")
    ap.add_argument(
        "--reconstruction-threshold",
        type=float,
        default=0.6,
        help="SecAgg+: share of a party's key shares needed to unmask (dropout tolerance)",
    )
    ap.add_argument(
        "--round-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for replies in each stage before treating a party as dropped",
    )
    ap.add_argument("--local-epochs", type=int, default=2)
    ap.add_argument("--learning-rate", type=float, default=0.5)
    ap.add_argument("--max-update-norm", type=float, default=50.0)
    ap.add_argument(
        "--timeout", type=float, default=1800.0, help="give up on the whole run after this many seconds"
    )
    transport.add_arguments(
        ap,
        cert_help="the SuperLink's certificate, naming the address parties dial",
        insecure_help="serve Flower in plaintext",
    )
    a = ap.parse_args(argv)
    try:
        rounds = resolve_rounds(a.rounds, os.environ.get(ROUNDS_ENV))
    except PrivacyError as exc:
        print(f"error: {exc} ({exc.hint})", file=sys.stderr)
        return 2

    listen = a.listen or f"0.0.0.0:{os.environ.get('MASTER_PORT', '9092')}"
    host, _, port_s = listen.rpartition(":")
    if not port_s.isdigit() or not host:
        print(f"error: --listen must be HOST:PORT, got {listen!r}", file=sys.stderr)
        return 2
    if not a.test_data.is_file():
        print(f"error: --test-data {a.test_data} does not exist", file=sys.stderr)
        return 2
    out = a.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_config = {
        "output-dir": str(out),
        "test-data": str(a.test_data.resolve()),
        "rounds": rounds,
        "strategy": a.strategy,
        "proximal-mu": a.proximal_mu,
        "secagg": not a.no_secagg,
        "min-parties": a.min_parties,
        "min-fit-parties": a.min_fit_parties,
        "reconstruction-threshold": a.reconstruction_threshold,
        "round-timeout": a.round_timeout,
        "local-epochs": a.local_epochs,
        "learning-rate": a.learning_rate,
        "max-update-norm": a.max_update_norm,
    }
    home = Path(tempfile.mkdtemp(prefix="flwr-home-", dir=out))
    try:
        superlink_bin = _flwr_bin("flower-superlink")
        tls = transport.resolve(
            insecure=a.insecure,
            ca=a.tls_ca,
            cert=a.tls_cert,
            key=a.tls_key,
            name="server",
            need_key=True,
            directory=home / "tls",
        )
        identity = tls.identity() if tls else None
        if identity is not None:
            transport.check_server_identity(identity)
    except PrivacyError as exc:
        shutil.rmtree(home, ignore_errors=True)
        print(f"error: {exc}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 2
    if identity is None:
        transport.warn_insecure()
    env = dict(os.environ, FLWR_HOME=str(home))
    os.environ["FLWR_HOME"] = str(home)
    connect = f"127.0.0.1:{port_s}"
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # State in memory (Flower's default): the run lives as long as this task, and SQLite commits
    # on every message were a measurable part of each SecAgg+ stage. The SuperExec that starts the
    # ServerApp asks for work every 0.1 s instead of every second.
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")
    # One port serves the parties (Fleet API), this wrapper (Control API) and the SuperExec and
    # ServerApp it starts (ServerAppIo API): with the certificate, all of it is TLS, and the
    # SuperLink hands the CA on to the SuperExec and ServerApp it starts.
    tls_args = (
        ["--insecure"]
        if identity is None
        else [
            "--ssl-certfile",
            str(identity.cert),
            "--ssl-keyfile",
            str(identity.key),
            "--ssl-ca-certfile",
            str(identity.ca),
        ]
    )
    ca = None if identity is None else identity.ca
    superlink = subprocess.Popen(
        [
            superlink_bin,
            *tls_args,
            "--host",
            host,
            "--port",
            port_s,
            "--disable-runtime-dependency-installation",
        ],
        env=env,
    )  # our process group: stopping the task stops it
    try:
        _wait_port("127.0.0.1", int(port_s), superlink, 60)
        run_id = submit_run(connect, run_config, ca)
        print(f"submitted run {run_id} to the SuperLink on {listen}", flush=True)
        deadline = time.monotonic() + a.timeout
        while True:
            if superlink.poll() is not None:
                raise PrivacyError(f"the SuperLink exited with status {superlink.returncode} during the run")
            status, details = run_status(connect, run_id, ca)
            if status.startswith("finished"):
                break
            if time.monotonic() > deadline:
                raise PrivacyError(f"run {run_id} did not finish within {a.timeout:g}s (status {status})")
            time.sleep(1.0)
        summary = out / "summary.json"
        if status != "finished:completed" or not summary.exists():
            print(
                f"error: run {run_id} ended {status}: {details or 'see the SuperLink log above'}",
                file=sys.stderr,
            )
            return 1
        print(json.dumps(json.loads(summary.read_text())), flush=True)
        try:
            registered = register_from_env(out, a.model_name)
        except ModelplaneError as exc:
            print(
                f"error: the run completed but its model was not registered: {exc}"
                + (f" ({exc.hint})" if exc.hint else ""),
                file=sys.stderr,
            )
            return 1
        if registered is not None:
            print(
                f"registered the final model as {registered['ref']} (training run {registered['training_run']})",
                flush=True,
            )
        return 0
    except PrivacyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_process(superlink)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
