"""Command line of the three hetero-LR roles; what a FederatedJob task command runs."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from modelplane.core.errors import ModelplaneError
from modelplane.privacy.tls import Listener, TlsFiles, connect
from modelplane.privacy.vertical import protocol
from modelplane.privacy.vertical.data import read_party_csv


def _parser(role: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m modelplane.privacy.vertical.{role}")
    p.add_argument("--ca", required=True, type=Path, help="job CA certificate (PEM)")
    p.add_argument("--cert", required=True, type=Path, help="this party's certificate (PEM, CN = role)")
    p.add_argument("--key", required=True, type=Path, help="this party's private key (PEM)")
    p.add_argument("--output", type=Path, help="write this party's result as JSON here")
    if role in ("arbiter", "guest"):
        p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to accept connections on")
        p.add_argument("--ready-file", type=Path, help="write the bound HOST:PORT here once listening")
    if role == "arbiter":
        p.add_argument("--key-bits", type=int, default=2048, help="Paillier modulus size")
    if role in ("guest", "host"):
        p.add_argument("--arbiter", required=True, help="arbiter HOST:PORT")
        p.add_argument("--data", required=True, type=Path, help="CSV with an id column")
    if role == "host":
        p.add_argument("--guest", required=True, help="guest HOST:PORT")
    if role == "guest":
        p.add_argument("--label-column", default="label")
        p.add_argument("--epochs", type=int, default=5)
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("--learning-rate", type=float, default=0.15)
        p.add_argument("--l2", type=float, default=0.01)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--psi-bits", type=int, default=2048)
    return p


def _listen(args: argparse.Namespace, files: TlsFiles) -> Listener:
    listener = Listener(args.listen, files)
    if args.ready_file:
        tmp = args.ready_file.with_suffix(".tmp")
        tmp.write_text(listener.address)
        tmp.replace(args.ready_file)
    return listener


def run(role: str, argv: list[str] | None = None) -> dict[str, object]:
    args = _parser(role).parse_args(argv)
    files = TlsFiles(args.ca, args.cert, args.key)
    result: dict[str, object]
    if role == "arbiter":
        listener = _listen(args, files)
        try:
            result = {"decrypted": protocol.run_arbiter(listener, key_bits=args.key_bits)}
        finally:
            listener.close()
    elif role == "guest":
        data = read_party_csv(args.data, label_column=args.label_column)
        config = protocol.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                                      l2=args.l2, seed=args.seed, psi_bits=args.psi_bits)
        listener = _listen(args, files)
        arbiter = connect(args.arbiter, files, "arbiter")
        host = listener.accept()
        listener.close()
        if host.peer != "host":
            raise ModelplaneError(f"expected the host to connect, got {host.peer!r}", field="certificate")
        result = asdict(protocol.run_guest(host, arbiter, data, config))
    else:
        data = read_party_csv(args.data)
        arbiter = connect(args.arbiter, files, "arbiter")
        guest = connect(args.guest, files, "guest")
        result = protocol.run_host(guest, arbiter, data)
    if args.output:
        args.output.write_text(json.dumps(result, indent=1))
    return result


def main(role: str) -> None:
    try:
        run(role)
    except ModelplaneError as exc:
        print(f"{role}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
