"""Hetero-LR end to end: three parties over real TLS sockets, what crosses the wire inspected."""

from __future__ import annotations

import contextlib
import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelplane.privacy.errors import MalformedMessage
from modelplane.privacy.paillier import FEATURE_FRAC_BITS, FRAC_BITS
from modelplane.privacy.tls import Listener, TlsFiles, connect
from modelplane.privacy.vertical import protocol
from modelplane.privacy.vertical.data import read_party_csv


def centralized_auc(host_csv: Path, guest_csv: Path, config: protocol.TrainConfig) -> float:
    from sklearn.linear_model import LogisticRegression

    host, guest = read_party_csv(host_csv), read_party_csv(guest_csv, label_column="label")
    train, test = protocol.split_ids(sorted(set(host.ids) & set(guest.ids)), config)

    def x(ids: list[str]) -> np.ndarray:
        return np.hstack([host.rows(ids).features, guest.rows(ids).features])

    model = LogisticRegression(max_iter=1000).fit(x(train), guest.rows(train).labels)
    labels = guest.rows(test).labels
    assert labels is not None
    return protocol.auc(labels, model.decision_function(x(test)))


def run_three_parties(pki: dict[str, TlsFiles], host_csv: Path, guest_csv: Path, config: protocol.TrainConfig):
    """Run arbiter, guest and host as threads on real TLS sockets; record every message sent."""
    wire: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)

    def recorder(sender: str):
        return lambda peer, data: wire[(sender, peer)].append(json.loads(data))

    arbiter_listener = Listener("127.0.0.1:0", pki["arbiter"], on_send=recorder("arbiter"))
    guest_listener = Listener("127.0.0.1:0", pki["guest"], on_send=recorder("guest"))
    out: dict[str, Any] = {}
    errors: list[BaseException] = []

    def guarded(name: str, fn):
        def run() -> None:
            try:
                out[name] = fn()
            except BaseException as exc:
                errors.append(exc)

        return threading.Thread(target=run, name=name)

    def guest():
        arbiter = connect(arbiter_listener.address, pki["guest"], "arbiter", on_send=recorder("guest"))
        return protocol.run_guest(guest_listener.accept(), arbiter, read_party_csv(guest_csv, label_column="label"), config)

    def host():
        arbiter = connect(arbiter_listener.address, pki["host"], "arbiter", on_send=recorder("host"))
        g = connect(guest_listener.address, pki["host"], "guest", on_send=recorder("host"))
        return protocol.run_host(g, arbiter, read_party_csv(host_csv))

    threads = [
        guarded("arbiter", lambda: protocol.run_arbiter(arbiter_listener, key_bits=1024)),
        guarded("guest", guest),
        guarded("host", host),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    arbiter_listener.close()
    guest_listener.close()
    if errors:
        raise errors[0]
    return out, wire


@pytest.fixture(scope="module")
def trained(pki: dict[str, TlsFiles], party_csvs: tuple[Path, Path]):
    config = protocol.TrainConfig(epochs=3, psi_bits=1024)
    out, wire = run_three_parties(pki, *party_csvs, config)
    return config, out, wire


def test_auc_is_close_to_centralized_logistic_regression(trained, party_csvs: tuple[Path, Path]) -> None:
    config, out, _ = trained
    result: protocol.GuestResult = out["guest"]
    assert result.shared_ids == 529  # 569 rows minus 20 host-only and 20 guest-only
    assert result.train_rows + result.test_rows == 529
    baseline = centralized_auc(*party_csvs, config)
    assert result.test_auc > 0.98
    assert abs(result.test_auc - baseline) < 0.01, (result.test_auc, baseline)
    steps = config.epochs * -(-result.train_rows // config.batch_size)
    assert out["arbiter"] == {"host": 20 * steps, "guest": 11 * steps}  # one masked sum per feature per step


def test_host_to_guest_carries_only_ciphertexts_during_training(trained, party_csvs: tuple[Path, Path]) -> None:
    _, _, wire = trained
    kinds = [m["kind"] for m in wire[("host", "guest")]]
    assert set(kinds) == {
        "psi_blinded_ids", "psi_intersection_tags", "train_plan_ack", "encrypted_forward",
        "partial_scores_train", "partial_scores_test",
    }
    host = read_party_csv(party_csvs[0])
    raw = {round(v * 2**bits) for v in host.features.ravel() for bits in (FRAC_BITS, FEATURE_FRAC_BITS)}
    raw |= set(host.features.ravel().tolist())
    for m in wire[("host", "guest")]:
        if m["kind"] == "encrypted_forward":
            assert all(isinstance(v, int) and v.bit_length() > 1500 for v in m["values"])
            assert not raw & set(m["values"])


def test_guest_never_sends_labels_and_rerandomizes_residuals(trained, party_csvs: tuple[Path, Path]) -> None:
    _, _, wire = trained
    to_host = wire[("guest", "host")]
    assert {m["kind"] for m in to_host} == {"psi_rsa_public_key", "psi_signatures", "train_plan", "encrypted_residual", "done"}
    n = next(m["n"] for m in wire[("arbiter", "host")] if m["kind"] == "paillier_public_key")
    nsq = n * n
    forwards = [m["values"] for m in wire[("host", "guest")] if m["kind"] == "encrypted_forward"]
    residuals = [m["values"] for m in to_host if m["kind"] == "encrypted_residual"]
    assert len(forwards) == len(residuals) == 3 * 7  # 3 epochs of 7 batches of <= 64 of the 429 train rows
    for fwd, res in zip(forwards, residuals, strict=True):
        for cu, cd in zip(fwd, res, strict=True):
            # without re-randomization cd / cu = 1 + m n would hand the host u_B - 4y in clear
            assert (cd * pow(cu, -1, nsq) % nsq - 1) % n != 0
    plan = next(m for m in to_host if m["kind"] == "train_plan")
    assert "label" not in json.dumps(plan)


def test_arbiter_sees_only_masked_gradients(trained) -> None:
    _, _, wire = trained
    for party in ("host", "guest"):
        assert {m["kind"] for m in wire[(party, "arbiter")]} == {"masked_encrypted_gradient", "done"}
        replies = [v for m in wire[("arbiter", party)] if m["kind"] == "masked_gradient" for v in m["values"]]
        # true |X^T 4d| < 2^(FRAC_BITS + FEATURE_FRAC_BITS + 20); masks spread values over 2^(... + 128)
        assert sum(abs(v) < 2 ** (FRAC_BITS + FEATURE_FRAC_BITS + 40) for v in replies) == 0


def test_malformed_forward_scores_are_rejected_naming_the_host(pki: dict[str, TlsFiles], party_csvs: tuple[Path, Path]) -> None:
    arbiter_listener = Listener("127.0.0.1:0", pki["arbiter"])
    guest_listener = Listener("127.0.0.1:0", pki["guest"])
    errors: list[BaseException] = []
    config = protocol.TrainConfig(epochs=1, psi_bits=1024)

    def arbiter() -> None:
        with contextlib.suppress(MalformedMessage):
            protocol.run_arbiter(arbiter_listener, key_bits=1024)

    def guest() -> None:
        a = connect(arbiter_listener.address, pki["guest"], "arbiter")
        try:
            protocol.run_guest(guest_listener.accept(), a, read_party_csv(party_csvs[1], label_column="label"), config)
        except MalformedMessage as exc:
            errors.append(exc)
        a.close()

    threads = [threading.Thread(target=arbiter), threading.Thread(target=guest)]
    for t in threads:
        t.start()
    a = connect(arbiter_listener.address, pki["host"], "arbiter")
    g = connect(guest_listener.address, pki["host"], "guest")
    host = read_party_csv(party_csvs[0])
    key = a.recv()
    from modelplane.privacy.paillier import PublicKey
    from modelplane.privacy.psi import intersect_as_requester

    intersect_as_requester(g, host.ids)
    g.recv()
    g.send({"kind": "train_plan_ack", "key_fingerprint": PublicKey(key["n"]).fingerprint()})
    g.send({"kind": "encrypted_forward", "values": [3.5] * 64})  # plaintext floats, not ciphertexts
    threads[1].join(30)
    a.close()
    g.close()
    threads[0].join(30)
    arbiter_listener.close()
    guest_listener.close()
    assert errors and errors[0].field == "host"
    assert "not a ciphertext" in errors[0].message


def test_parties_holding_different_paillier_keys_stop_with_a_clear_error(
    pki: dict[str, TlsFiles], party_csvs: tuple[Path, Path]
) -> None:
    from modelplane.privacy.errors import KeyMismatch
    from modelplane.privacy.paillier import PrivateKey

    guest_listener = Listener("127.0.0.1:0", pki["guest"])
    arbiter_a, arbiter_b = Listener("127.0.0.1:0", pki["arbiter"]), Listener("127.0.0.1:0", pki["arbiter"])

    def fake_arbiter(listener: Listener) -> None:  # hands out its own key to whoever connects
        key = PrivateKey.generate(1024)
        listener.accept().send(key.public.to_message())

    errors: dict[str, BaseException] = {}

    def guest() -> None:
        a = connect(arbiter_b.address, pki["guest"], "arbiter")
        try:
            protocol.run_guest(guest_listener.accept(), a, read_party_csv(party_csvs[1], label_column="label"),
                               protocol.TrainConfig(epochs=1, psi_bits=1024))
        except KeyMismatch as exc:
            errors["guest"] = exc

    threads = [threading.Thread(target=fake_arbiter, args=(arbiter_a,)),
               threading.Thread(target=fake_arbiter, args=(arbiter_b,)), threading.Thread(target=guest)]
    for t in threads:
        t.start()
    a = connect(arbiter_a.address, pki["host"], "arbiter")
    g = connect(guest_listener.address, pki["host"], "guest")
    with pytest.raises(KeyMismatch, match="different Paillier keys"):
        protocol.run_host(g, a, read_party_csv(party_csvs[0]))
    for t in threads:
        t.join(30)
    for listener in (guest_listener, arbiter_a, arbiter_b):
        listener.close()
    assert "same arbiter" in errors["guest"].hint
