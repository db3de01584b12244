"""Deterministic sample order for an epoch, split by rank and worker, resumable mid-epoch.

Pure functions of (n, seed, epoch, ...): every rank computes the same permutation with no
communication, and a restarted job rebuilds it from the checkpointed (epoch, consumed) pair.

Resume contract: ``consumed`` counts samples this *rank* has handed to the training loop. Worker
``w`` of ``W`` takes ``rank_stream[consumed:][w::W]``; PyTorch's DataLoader interleaves workers
round-robin, so the loop sees ``rank_stream[consumed], rank_stream[consumed+1], ...`` for any W.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from modelplane.data.errors import DataError

ShuffleMode = Literal["none", "global", "shards"]


def epoch_order(n: int, *, seed: int, epoch: int, mode: ShuffleMode = "global",
                shard_sizes: Sequence[int] | None = None) -> np.ndarray:
    """Indices 0..n-1 in this epoch's order.

    ``global`` permutes all samples (best mixing; random reads). ``shards`` permutes the shard order
    and the samples within each shard (each shard is read as a unit: friendlier to remote stores
    and block caches). ``none`` keeps the packed order.
    """
    if mode == "none":
        return np.arange(n, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64([seed, epoch]))
    if mode == "global":
        return rng.permutation(n).astype(np.int64)
    if mode == "shards":
        if shard_sizes is None or sum(shard_sizes) != n:
            raise DataError("shuffle mode 'shards' needs the shard sizes summing to the sample count.",
                            field="shuffle")
        starts = np.concatenate([[0], np.cumsum(shard_sizes)[:-1]]).astype(np.int64)
        parts = [starts[s] + rng.permutation(shard_sizes[s]) for s in rng.permutation(len(shard_sizes))]
        return np.concatenate(parts).astype(np.int64) if parts else np.arange(0, dtype=np.int64)
    raise DataError(f"unknown shuffle mode {mode!r}.", hint="Use 'none', 'global' or 'shards'.", field="shuffle")


def rank_stream(order: np.ndarray, *, rank: int, world: int, drop_last: bool = False) -> np.ndarray:
    """This rank's share: equal length on every rank (padded by wrapping, as DistributedSampler does)."""
    if world < 1 or not 0 <= rank < world:
        raise DataError(f"rank {rank} is outside a world of size {world}.", field="rank",
                        hint="Use 0 <= rank < world_size.")
    n = len(order)
    if drop_last:
        order = order[: n - n % world]
    elif n % world and n:
        pad = world - n % world
        order = np.concatenate([order, np.resize(order, pad)])
    return order[rank::world]


def worker_stream(stream: np.ndarray, *, worker: int, num_workers: int, consumed: int = 0) -> np.ndarray:
    """Indices one DataLoader worker yields after ``consumed`` samples of the rank stream."""
    if num_workers < 1 or not 0 <= worker < num_workers:
        raise DataError(f"worker {worker} is outside {num_workers} workers.", field="worker")
    if consumed < 0 or consumed > len(stream):
        raise DataError(f"cannot resume at sample {consumed}: this rank's epoch has {len(stream)}.",
                        field="consumed", hint="Resume with the consumed count saved in the checkpoint.")
    return stream[consumed:][worker::num_workers]
