"""The three roles of hetero-LR. Each function runs one party over already-open TLS channels.

Per mini-batch (FATE's protocol, labels y in {0,1}, Taylor loss so the residual is linear):

1. host -> guest   [[u_A]]                 (u_A = X_A w_A, encrypted by the host)
2. guest -> host   [[4d]] = [[u_A]] + (u_B + 2 - 4y), re-randomized  (d = 0.25 u + 0.5 - y)
3. each party -> arbiter  [[X^T 4d]] + R   (R a fresh random mask the party keeps)
4. arbiter -> party       X^T 4d + R       (decrypted; masked, so the arbiter learns nothing)
5. party unmasks and updates its own weights; the guest holds the intercept.

Only ciphertexts cross between host and guest during training; the arbiter only ever sees
masked sums. Prediction follows FATE: the host sends its partial scores X_A w_A for the
evaluation rows to the guest, which holds the labels and the intercept.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from modelplane.privacy.errors import KeyMismatch, MalformedMessage
from modelplane.privacy.paillier import (
    FEATURE_FRAC_BITS,
    FRAC_BITS,
    ObfuscatorPool,
    PrivateKey,
    PublicKey,
    encode,
)
from modelplane.privacy.psi import intersect_as_requester, intersect_as_signer
from modelplane.privacy.tls import Channel, Listener
from modelplane.privacy.vertical.data import PartyData

MASK_BITS = FRAC_BITS + FEATURE_FRAC_BITS + 128
"""Masks are this many bits: far above any gradient sum, far below n/2 for 1024-bit keys."""


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 0.15
    l2: float = 0.01
    seed: int = 0
    test_fraction: float = 0.2
    psi_bits: int = 2048


@dataclass
class GuestResult:
    shared_ids: int
    train_rows: int
    test_rows: int
    epoch_seconds: list[float]
    train_auc: float
    test_auc: float
    weights: list[float]
    intercept: float
    bytes_sent: int
    bytes_received: int
    config: dict[str, Any] = field(default_factory=dict)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties averaged."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _expect(channel: Channel, kind: str) -> dict[str, Any]:
    message = channel.recv()
    if message["kind"] != kind:
        raise MalformedMessage(
            f"{channel.peer} sent {message['kind']!r} where {kind!r} was expected", field=channel.peer
        )
    return message


def _is_test(identifier: str, fraction: float, seed: int) -> bool:
    h = int.from_bytes(hashlib.sha256(f"{seed}:{identifier}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def split_ids(shared: list[str], config: TrainConfig) -> tuple[list[str], list[str]]:
    test = [i for i in shared if _is_test(i, config.test_fraction, config.seed)]
    train = [i for i in shared if not _is_test(i, config.test_fraction, config.seed)]
    return train, test


def batches(n: int, config: TrainConfig, epoch: int) -> list[np.ndarray]:
    order = np.random.default_rng(config.seed * 1000 + epoch).permutation(n)
    return [order[k : k + config.batch_size] for k in range(0, n, config.batch_size)]


def _int_columns(x: np.ndarray) -> list[list[int]]:
    return [[encode(v, FEATURE_FRAC_BITS) for v in x[:, j]] for j in range(x.shape[1])]


def _secure_gradient(
    public: PublicKey, arbiter: Channel, residual: list[int], x: np.ndarray
) -> np.ndarray:
    """Steps 3-4: masked encrypted X^T [[4d]] to the arbiter, unmasked mean gradient back."""
    encrypted = public.dot_columns(residual, _int_columns(x))
    masks = [secrets.randbits(MASK_BITS) for _ in encrypted]
    arbiter.send({"kind": "masked_encrypted_gradient", "values": public.add_plain(encrypted, masks)})
    reply = _expect(arbiter, "masked_gradient")
    values = reply.get("values")
    if not isinstance(values, list) or len(values) != len(masks) or not all(isinstance(v, int) for v in values):
        raise MalformedMessage("arbiter sent a malformed masked gradient", field=arbiter.peer)
    sums = np.array([float(v - m) for v, m in zip(values, masks, strict=True)])
    scaled: np.ndarray = sums / (4.0 * x.shape[0] * 2.0 ** (FRAC_BITS + FEATURE_FRAC_BITS))
    return scaled


def _receive_key(arbiter: Channel) -> PublicKey:
    return PublicKey.from_message(_expect(arbiter, "paillier_public_key"), arbiter.peer)


def run_arbiter(listener: Listener, *, key_bits: int = 1024, parties: tuple[str, ...] = ("host", "guest")) -> dict[str, int]:
    """Hold the private key; decrypt masked gradients for each party until both say done."""
    key = PrivateKey.generate(key_bits)
    channels: dict[str, Channel] = {}
    while len(channels) < len(parties):
        channel = listener.accept()
        if channel.peer not in parties or channel.peer in channels:
            channel.close()
            raise MalformedMessage(f"unexpected party {channel.peer!r} connected to the arbiter",
                                   hint=f"expected one each of {parties}", field=channel.peer)
        channels[channel.peer] = channel
    decrypted = dict.fromkeys(parties, 0)
    errors: list[BaseException] = []

    def serve(name: str, channel: Channel) -> None:
        try:
            channel.send(key.public.to_message())
            while True:
                message = channel.recv()
                if message["kind"] == "done":
                    return
                if message["kind"] != "masked_encrypted_gradient":
                    raise MalformedMessage(f"{name} sent {message['kind']!r} to the arbiter", field=name)
                values = key.public.check_ciphertexts(message.get("values"), name)
                channel.send({"kind": "masked_gradient", "values": key.decrypt(values)})
                decrypted[name] += len(values)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=serve, args=item, daemon=True) for item in channels.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for channel in channels.values():
        channel.close()
    if errors:
        raise errors[0]
    return decrypted


def run_guest(
    host: Channel, arbiter: Channel, data: PartyData, config: TrainConfig
) -> GuestResult:
    """The label holder: drives the epochs, owns the intercept, and evaluates AUC."""
    if data.labels is None:
        raise MalformedMessage("the guest needs a label column", hint="pass --label-column", field="data")
    public = _receive_key(arbiter)
    shared = intersect_as_signer(host, data.ids, bits=config.psi_bits)
    train_ids, test_ids = split_ids(shared, config)
    host.send({"kind": "train_plan", "config": asdict(config), "key_fingerprint": public.fingerprint(),
               "train_ids": train_ids, "test_ids": test_ids})
    ack = _expect(host, "train_plan_ack")
    if ack.get("key_fingerprint") != public.fingerprint():
        raise KeyMismatch("host and guest received different Paillier keys from the arbiter",
                          hint="both must connect to the same arbiter")
    train, test = data.rows(train_ids), data.rows(test_ids)
    x = np.hstack([train.features, np.ones((len(train_ids), 1))])  # intercept column
    y = train.labels
    assert y is not None
    w = np.zeros(x.shape[1])
    pool = ObfuscatorPool(public, target=len(train_ids)).start()
    epoch_seconds = []
    for epoch in range(config.epochs):
        started = time.perf_counter()
        for batch in batches(len(train_ids), config, epoch):
            forward = _expect(host, "encrypted_forward")
            u_a = public.check_ciphertexts(forward.get("values"), host.peer, count=len(batch))
            xb = x[batch]
            plain = [encode(v) for v in xb @ w + 2.0 - 4.0 * y[batch]]
            residual = public.rerandomize(public.add_plain(u_a, plain), pool)
            host.send({"kind": "encrypted_residual", "values": residual})
            grad = _secure_gradient(public, arbiter, residual, xb)
            w -= config.learning_rate * (grad + config.l2 * np.r_[w[:-1], 0.0])
        epoch_seconds.append(time.perf_counter() - started)
    pool.stop()

    def scores(rows: PartyData, ids: list[str], kind: str) -> np.ndarray:
        message = _expect(host, kind)
        values = message.get("values")
        if not isinstance(values, list) or len(values) != len(ids):
            raise MalformedMessage(f"host sent {kind} of the wrong length", field=host.peer)
        return np.asarray(values, dtype=float) + np.hstack([rows.features, np.ones((len(ids), 1))]) @ w

    train_scores = scores(train, train_ids, "partial_scores_train")
    test_scores = scores(test, test_ids, "partial_scores_test")
    host.send({"kind": "done"})
    arbiter.send({"kind": "done"})
    assert test.labels is not None
    return GuestResult(
        shared_ids=len(shared), train_rows=len(train_ids), test_rows=len(test_ids), epoch_seconds=epoch_seconds,
        train_auc=auc(y, train_scores), test_auc=auc(test.labels, test_scores),
        weights=w[:-1].tolist(), intercept=float(w[-1]),
        bytes_sent=host.bytes_sent + arbiter.bytes_sent, bytes_received=host.bytes_received + arbiter.bytes_received,
        config=asdict(config),
    )


def run_host(guest: Channel, arbiter: Channel, data: PartyData) -> dict[str, Any]:
    """The feature-only party: encrypts its partial scores, never sees labels or residuals in clear."""
    if data.labels is not None:
        raise MalformedMessage("the host must not hold labels", field="data")
    public = _receive_key(arbiter)
    shared = intersect_as_requester(guest, data.ids)
    plan = _expect(guest, "train_plan")
    guest.send({"kind": "train_plan_ack", "key_fingerprint": public.fingerprint()})
    if plan.get("key_fingerprint") != public.fingerprint():
        raise KeyMismatch("host and guest received different Paillier keys from the arbiter",
                          hint="both must connect to the same arbiter")
    config = TrainConfig(**plan["config"])
    train_ids, test_ids = plan["train_ids"], plan["test_ids"]
    if not set(train_ids) | set(test_ids) <= set(shared):
        raise MalformedMessage("guest's plan names IDs outside the intersection", field=guest.peer)
    train, test = data.rows(train_ids), data.rows(test_ids)
    x = train.features
    w = np.zeros(x.shape[1])
    pool = ObfuscatorPool(public, target=len(train_ids)).start()
    for epoch in range(config.epochs):
        for batch in batches(len(train_ids), config, epoch):
            xb = x[batch]
            guest.send({"kind": "encrypted_forward", "values": public.encrypt([encode(v) for v in xb @ w], pool)})
            message = _expect(guest, "encrypted_residual")
            residual = public.check_ciphertexts(message.get("values"), guest.peer, count=len(batch))
            grad = _secure_gradient(public, arbiter, residual, xb)
            w -= config.learning_rate * (grad + config.l2 * w)
    pool.stop()
    guest.send({"kind": "partial_scores_train", "values": (x @ w).tolist()})
    guest.send({"kind": "partial_scores_test", "values": (test.features @ w).tolist()})
    _expect(guest, "done")
    arbiter.send({"kind": "done"})
    return {"shared_ids": len(shared), "weights": w.tolist(), "bytes_sent": guest.bytes_sent + arbiter.bytes_sent}
