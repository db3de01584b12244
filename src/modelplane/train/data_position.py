"""A batch sampler whose position survives a restart and a change of world size.

Why not DistributedSampler: it restarts an epoch from its beginning after a failure (samples
seen twice, others skipped) and its rank striding depends on the world size. Here the position is
one number, the global samples consumed in the epoch; every global batch is a contiguous slice of
one seeded permutation, and rank r takes its share of that slice. With the global batch kept
fixed, a resumed job of any size continues at the exact next sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from modelplane.core.errors import InvalidSpec


class ResumableBatchSampler:
    """Yields this rank's micro-batches (lists of dataset indices) from the saved position on.

    The position moves only when the training loop calls :meth:`advance` after it consumed a batch
    (DataLoader workers prefetch, so "yielded" is not "trained on").
    """

    def __init__(
        self,
        dataset_len: int,
        *,
        global_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if global_batch_size <= 0 or global_batch_size % world_size:
            raise InvalidSpec(
                f"global batch {global_batch_size} is not a positive multiple of world size {world_size}",
                field="global_batch_size",
                hint="choose a global batch divisible by the number of data-parallel ranks",
            )
        if dataset_len < global_batch_size:
            raise InvalidSpec(
                f"dataset of {dataset_len} samples is smaller than one global batch ({global_batch_size})",
                field="global_batch_size",
            )
        self.dataset_len = dataset_len
        self.global_batch_size = global_batch_size
        self.rank = rank
        self.world_size = world_size
        self.batch_size = global_batch_size // world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.consumed = 0  # global samples consumed in this epoch

    @property
    def batches_per_epoch(self) -> int:
        return self.dataset_len // self.global_batch_size

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.dataset_len))
        import torch

        g = torch.Generator()
        g.manual_seed(self.seed * 100_003 + epoch)
        return [int(i) for i in torch.randperm(self.dataset_len, generator=g)]

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order(self.epoch)
        end = self.batches_per_epoch * self.global_batch_size
        for start in range(self.consumed, end, self.global_batch_size):
            lo = start + self.rank * self.batch_size
            yield order[lo : lo + self.batch_size]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.consumed // self.global_batch_size

    def advance(self, batches: int = 1) -> None:
        """Record that ``batches`` global batches were trained on; rolls over to the next epoch."""
        self.consumed += batches * self.global_batch_size
        while self.consumed >= self.batches_per_epoch * self.global_batch_size:
            self.consumed -= self.batches_per_epoch * self.global_batch_size
            self.epoch += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "dataset_len": self.dataset_len,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["dataset_len"] != self.dataset_len or state["seed"] != self.seed:
            raise InvalidSpec(
                "the data position was saved for another dataset or seed "
                f"(len {state['dataset_len']}, seed {state['seed']}; now len {self.dataset_len}, seed {self.seed})",
                field="data",
                hint="resume with the same dataset and seed, or start a fresh run directory",
            )
        if state["global_batch_size"] != self.global_batch_size:
            raise InvalidSpec(
                f"global batch changed from {state['global_batch_size']} to {self.global_batch_size}",
                field="global_batch_size",
                hint="keep the global batch on resume; change the per-rank batch when the world size changes",
            )
        self.epoch = int(state["epoch"])
        self.consumed = int(state["consumed"])
