"""PyTorch adapters over packed shards (import this module only where torch is installed).

``ShardMapDataset`` serves random access (use it with a DistributedSampler); ``ShardIterableDataset``
does its own deterministic shuffling, splits by rank and by DataLoader worker, and resumes mid-epoch
from the (epoch, consumed) pair a checkpoint saved.

A sensitive (encrypted) shard set needs nothing more: the ``ShardedDataset`` decrypts, each worker
process decrypting what it reads, with the key released to the job (pickled along to workers).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from modelplane.data._deps import require
from modelplane.data.order import ShuffleMode, rank_stream
from modelplane.data.shards import ShardedDataset

_torch = require("torch", extra="train")
_tud = require("torch.utils.data", package="torch", extra="train")

Transform = Callable[[str, bytes], Any]


def _identity(key: str, payload: bytes) -> Any:
    return payload


def _rank_world(rank: int | None, world: int | None) -> tuple[int, int]:
    if rank is not None and world is not None:
        return rank, world
    dist = _torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class ShardMapDataset(_tud.Dataset):  # type: ignore[misc,name-defined]
    """Map-style: ``ds[i]`` is ``transform(key, payload)`` of sample i."""

    def __init__(self, shards: ShardedDataset, transform: Transform = _identity) -> None:
        self.shards = shards
        self.transform = transform

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int) -> Any:
        return self.transform(self.shards.keys[i], self.shards.read(i))

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """A whole batch in one call: the DataLoader's fetcher uses this instead of ``__getitem__``."""
        keys, transform = self.shards.keys, self.transform
        return [transform(keys[i], p) for i, p in zip(indices, self.shards.read_many(indices), strict=True)]


class ShardIterableDataset(_tud.IterableDataset):  # type: ignore[misc,name-defined]
    """Iterable: this rank's share of the epoch's deterministic order, split across workers."""

    def __init__(self, shards: ShardedDataset, *, seed: int = 0, shuffle: ShuffleMode = "global",
                 rank: int | None = None, world_size: int | None = None, drop_last: bool = False,
                 transform: Transform = _identity) -> None:
        self.shards = shards
        self.seed = seed
        self.shuffle: ShuffleMode = shuffle
        self.rank, self.world_size = _rank_world(rank, world_size)
        self.drop_last = drop_last
        self.transform = transform
        self.epoch = 0
        self.consumed = 0

    def set_epoch(self, epoch: int, consumed: int = 0) -> None:
        """Start ``epoch``, skipping the ``consumed`` samples this rank already trained on."""
        self.epoch = epoch
        self.consumed = consumed

    def state_dict(self, consumed: int) -> dict[str, int]:
        """What to checkpoint; ``consumed`` = samples of this epoch the training loop has seen."""
        return {"epoch": self.epoch, "consumed": consumed, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed = state.get("seed", self.seed)
        self.set_epoch(state["epoch"], state["consumed"])

    def __len__(self) -> int:
        n = len(self.shards)
        per_rank = n // self.world_size if self.drop_last else -(-n // self.world_size)
        return per_rank - self.consumed

    def __iter__(self) -> Iterator[Any]:
        info = _tud.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for key, payload in self.shards.iter_epoch(
            epoch=self.epoch, seed=self.seed, shuffle=self.shuffle, rank=self.rank, world=self.world_size,
            worker=worker, num_workers=num_workers, consumed=self.consumed, drop_last=self.drop_last,
        ):
            yield self.transform(key, payload)

    def rank_indices(self) -> list[int]:
        """Sample indices this rank sees this epoch (before skipping ``consumed``), for inspection."""
        order = self.shards.order(epoch=self.epoch, seed=self.seed, shuffle=self.shuffle)
        return [int(i) for i in rank_stream(order, rank=self.rank, world=self.world_size, drop_last=self.drop_last)]
