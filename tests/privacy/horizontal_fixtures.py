"""Shared setup of the horizontal-FL process tests: shards on disk, a tapped federation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelplane.privacy.federation import SERVER_ROLE
from modelplane.privacy.horizontal import local, model
from modelplane.privacy.horizontal.data import read_shard, write_digits_shards
from modelplane.privacy.tls import PemIdentity, write_identity
from tests.privacy.wiretap import TlsWiretap, Wiretap

PARTIES = 5


def shards(tmp: Path) -> tuple[dict[str, Path], Path]:
    paths = write_digits_shards(tmp / "data", PARTIES, alpha=0.5, seed=0)
    test = paths.pop("test")
    return paths, test


class Taps:
    """Both views of what the parties send: decrypted (what the server sees) and raw (the wire)."""

    def __init__(self, server_port: int, pki_dir: Path, pki: dict[str, PemIdentity]) -> None:
        files = write_identity(pki[SERVER_ROLE], pki_dir, SERVER_ROLE)
        self.decrypted = TlsWiretap(server_port, files)
        self.raw = Wiretap(self.decrypted.port)
        self.port = self.raw.port

    def sent_to_server(self) -> bytes:
        """The plaintext the parties sent, as the server reads it after TLS."""
        return self.decrypted.sent_to_server()

    def on_the_wire(self) -> bytes:
        return self.raw.sent_to_server()

    def close(self) -> None:
        self.raw.close()
        self.decrypted.close()


def tapped(
    tmp: Path,
    shard_paths: dict[str, Path],
    test: Path,
    server_args: list[str],
    party_args: dict[str, list[str]] | None = None,
) -> tuple[local.Federation, Taps]:
    """A federation (TLS, as launched by the platform) whose parties connect through both taps."""
    port = local.free_port()
    pki = local.mint(list(shard_paths))
    tap = Taps(port, tmp / "tap-tls", pki)
    fed = local.start(
        tmp,
        shard_paths,
        test,
        server_args=server_args,
        party_args=party_args,
        port=port,
        party_port=tap.port,
        pki=pki,
    )
    return fed, tap


def first_round_update(
    shard: Path, party_index: int, epochs: int = 2, learning_rate: float = 0.5
) -> np.ndarray:
    """The plaintext weights party ``party_index`` computes in round 1 (deterministic from zeros)."""
    x, y = read_shard(shard)
    cfg = model.LocalConfig(epochs=epochs, learning_rate=learning_rate)
    return model.train_local(model.zeros(), x, y, cfg, seed=party_index * 1000 + 1)[0]


def appears(update: np.ndarray, wire: bytes) -> bool:
    """Whether a run of the update's raw float64 values occurs in the bytes on the wire."""
    raw = np.ascontiguousarray(update, dtype=np.float64).tobytes()
    # Several windows, skipping the all-zero rows (pixels that are always blank give zero weights).
    windows = [raw[i : i + 48] for i in range(0, len(raw) - 48, 480) if any(raw[i : i + 48])]
    return any(w in wire for w in windows)


def fedavg_of(shard_paths: dict[str, Path], names: list[str]) -> list[np.ndarray]:
    """Round-1 FedAvg (weighted by rows) of the named parties, computed in the clear for comparison."""
    order = list(shard_paths)
    total = 0
    acc = [np.zeros_like(a) for a in model.zeros()]
    for name in names:
        x, y = read_shard(shard_paths[name])
        params = model.train_local(
            model.zeros(), x, y, model.LocalConfig(), seed=order.index(name) * 1000 + 1
        )
        for a, p in zip(acc, params, strict=True):
            a += len(y) * p
        total += len(y)
    return [a / total for a in acc]


def saved_model(tmp: Path) -> list[np.ndarray]:
    with np.load(tmp / "out" / "model.npz") as z:
        return [z["W"], z["b"]]
