from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.core.errors import InvalidSpec
from modelplane.train.data_position import ResumableBatchSampler


def _global_batches(n: int, gb: int, world: int, seed: int, skip: int, count: int) -> list[list[int]]:
    """The global batches trained on when ``world`` ranks resume after ``skip`` global batches."""
    samplers = [
        ResumableBatchSampler(n, global_batch_size=gb, rank=r, world_size=world, seed=seed)
        for r in range(world)
    ]
    out = []
    for s in samplers:
        s.advance(skip)
    while len(out) < count:
        iters = [iter(s) for s in samplers]
        for parts in zip(*iters, strict=True):
            out.append([i for p in parts for i in p])
            for s in samplers:
                s.advance()
            if len(out) == count:
                break
    return out


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from([1, 2, 4]),
    st.sampled_from([1, 2, 4, 8]),
    st.integers(0, 30),
    st.integers(0, 5),
)
def test_any_world_size_resumes_at_the_exact_sample(world_a: int, world_b: int, skip: int, seed: int) -> None:
    n, gb = 64, 8
    uninterrupted = _global_batches(n, gb, 1, seed, 0, skip + 6)
    # world_a trained `skip` batches, checkpointed; world_b resumes from that state
    a = ResumableBatchSampler(n, global_batch_size=gb, rank=0, world_size=world_a, seed=seed)
    a.advance(skip)
    state = a.state_dict()
    resumed = []
    samplers = []
    for r in range(world_b):
        s = ResumableBatchSampler(n, global_batch_size=gb, rank=r, world_size=world_b, seed=seed)
        s.load_state_dict(state)
        samplers.append(s)
    while len(resumed) < 6:
        for parts in zip(*(iter(s) for s in samplers), strict=True):
            resumed.append([i for p in parts for i in p])
            for s in samplers:
                s.advance()
            if len(resumed) == 6:
                break
    assert resumed == uninterrupted[skip:]


def test_each_epoch_is_a_permutation_and_epochs_differ() -> None:
    s = ResumableBatchSampler(32, global_batch_size=8, seed=0)
    first = [i for b in s for i in b]
    s.advance(len(s))
    assert s.epoch == 1 and s.consumed == 0
    second = [i for b in s for i in b]
    assert sorted(first) == sorted(second) == list(range(32))
    assert first != second


def test_refuses_changed_dataset_or_global_batch() -> None:
    s = ResumableBatchSampler(32, global_batch_size=8)
    with pytest.raises(InvalidSpec, match="global batch"):
        ResumableBatchSampler(32, global_batch_size=4).load_state_dict(s.state_dict())
    with pytest.raises(InvalidSpec, match="another dataset"):
        ResumableBatchSampler(40, global_batch_size=8).load_state_dict(s.state_dict())
    with pytest.raises(InvalidSpec, match="multiple of world size"):
        ResumableBatchSampler(32, global_batch_size=6, world_size=4)
