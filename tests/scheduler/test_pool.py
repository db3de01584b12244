"""The pool's indexes stay equal to a fresh computation through any sequence of takes and give-backs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.core.affinity import Taint, TaintEffect
from modelplane.core.placement import TaskAssignment
from modelplane.core.workload import TaskRequest
from modelplane.scheduler.pool import Pool
from tests.scheduler.factories import node

NODES = [
    node("a", switch="s0"), node("b", switch="s0", gpus=4),
    node("c", switch="s1", model="AMD-MI250", taints=[Taint(key="k", effect=TaintEffect.NO_SCHEDULE)]),
    node("d", switch="s1", group="g1"), node("e", model=None, switch="s1"),
]


def snapshot(pool: Pool) -> tuple[object, ...]:
    return (
        {m: [sorted(b) for b in buckets] for m, buckets in pool.by_whole.items()},
        {m: [sorted(b) for b in buckets] for m, buckets in pool.partial.items()},
        [{k: v for k, v in d.items() if v} for d in pool.switch_whole],
        [{k: v for k, v in d.items() if v} for d in pool.group_whole],
        [{k: v for k, v in d.items() if any(v)} for d in pool.switch_hist],
        [{k: v for k, v in d.items() if any(v)} for d in pool.group_hist],
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from((1, 2, 4)), st.sampled_from((1000, 300, 600))),
                max_size=25), st.data())
def test_indexes_match_a_fresh_pool(ops: list[tuple[int, int, int]], data: st.DataObject) -> None:
    pool = Pool(NODES)
    taken: list[TaskAssignment] = []
    for k, (ni, count, milli) in enumerate(ops):
        i = pool.index[NODES[ni].name]
        req = TaskRequest(1000, 1024, 1 if milli < 1000 else count, milli)
        devices = pool.free[i].pick_devices(req)
        assert pool.fits(i, req) == pool.free[i].fits(req)
        if devices is not None and pool.free[i].fits(req):
            a = TaskAssignment("w", k, k, NODES[ni].name, 1000, 1024, devices, milli)
            pool.take(a)
            taken.append(a)
        if taken and data.draw(st.booleans()):
            pool.give_back(taken.pop(data.draw(st.integers(0, len(taken) - 1))))
    from modelplane.core.placement import Placement

    fresh = Pool(NODES, [Placement("all", tuple(taken))])
    assert snapshot(pool) == snapshot(fresh)
    for k in range(len(NODES)):
        assert pool.free[k].device_free == fresh.free[k].device_free
