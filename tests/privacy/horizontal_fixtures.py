"""Shared setup of the horizontal-FL process tests: shards on disk, a tapped federation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modelplane.privacy.horizontal import local, model
from modelplane.privacy.horizontal.data import read_shard, write_digits_shards
from tests.privacy.wiretap import Wiretap

PARTIES = 5


def shards(tmp: Path) -> tuple[dict[str, Path], Path]:
    paths = write_digits_shards(tmp / "data", PARTIES, alpha=0.5, seed=0)
    test = paths.pop("test")
    return paths, test


def tapped(tmp: Path, shard_paths: dict[str, Path], test: Path, server_args: list[str],
           party_args: dict[str, list[str]] | None = None) -> tuple[local.Federation, Wiretap]:
    port = local.free_port()
    tap = Wiretap(port)
    fed = local.start(tmp, shard_paths, test, server_args=server_args, party_args=party_args, port=port,
                      party_port=tap.port)
    return fed, tap


def first_round_update(shard: Path, party_index: int, epochs: int = 2, learning_rate: float = 0.5) -> np.ndarray:
    """The plaintext weights party ``party_index`` computes in round 1 (deterministic from zeros)."""
    x, y = read_shard(shard)
    cfg = model.LocalConfig(epochs=epochs, learning_rate=learning_rate)
    return model.train_local(model.zeros(), x, y, cfg, seed=party_index * 1000 + 1)[0]


def appears(update: np.ndarray, wire: bytes) -> bool:
    """Whether a run of the update's raw float64 values occurs in the bytes on the wire."""
    raw = np.ascontiguousarray(update, dtype=np.float64).tobytes()
    # Several windows, skipping the all-zero rows (pixels that are always blank give zero weights).
    windows = [raw[i:i + 48] for i in range(0, len(raw) - 48, 480) if any(raw[i:i + 48])]
    return any(w in wire for w in windows)


def fedavg_of(shard_paths: dict[str, Path], names: list[str]) -> list[np.ndarray]:
    """Round-1 FedAvg (weighted by rows) of the named parties, computed in the clear for comparison."""
    order = list(shard_paths)
    total = 0
    acc = [np.zeros_like(a) for a in model.zeros()]
    for name in names:
        x, y = read_shard(shard_paths[name])
        params = model.train_local(model.zeros(), x, y, model.LocalConfig(), seed=order.index(name) * 1000 + 1)
        for a, p in zip(acc, params, strict=True):
            a += len(y) * p
        total += len(y)
    return [a / total for a in acc]


def saved_model(tmp: Path) -> list[np.ndarray]:
    with np.load(tmp / "out" / "model.npz") as z:
        return [z["W"], z["b"]]
