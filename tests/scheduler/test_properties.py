"""Invariants of every policy variant over random pools and job streams, through several rounds.

Each example runs rounds of: schedule, start what was placed, stop what was preempted (back to
pending), finish some running work at random. After every round:

* no device, CPU or memory over-allocated (fractions included);
* quota never exceeded beyond the borrowing rules, for any queue that gained usage;
* gangs all-or-nothing: a placement has every task of its workload, ranks 0..n-1;
* every assignment passes every hard filter (required affinity, selector, taints, TEE, model, state);
* preemption only of running work of strictly lower priority than a pending beneficiary, or, as a
  reclaim, of work whose queue borrows in the cohort of a beneficiary whose queue stays within its
  nominal quota (whatever the priorities);
* over all rounds, the "X preempted Y by priority" graph has no cycle.
"""

from __future__ import annotations

import re
from types import MappingProxyType

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from modelplane.core.affinity import Taint, TaintEffect, Toleration
from modelplane.core.node import Node, NodeState
from modelplane.core.placement import Placement, free_capacity
from modelplane.core.queue import QueueSpec
from modelplane.core.workload import PodSet, TaskRequest, Workload
from modelplane.scheduler.filters import DEFAULT_FILTERS
from modelplane.scheduler.interface import RunningWorkload, SchedulingInput, SchedulingResult
from modelplane.scheduler.quota import QuotaBook, placement_gpu_milli
from modelplane.scheduler.registry import create_scheduler
from tests.scheduler.factories import affinity, node

MODELS = ("NVIDIA-A100", "AMD-MI250")
TAINT = Taint(key="dedicated", value="x", effect=TaintEffect.NO_SCHEDULE)
ZONE_A = affinity(
    {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]
        }
    }
)
BENEFICIARY = re.compile(
    r"^preempted for .* \((?P<id>[^,]+), priority (?P<prio>-?\d+) (?P<op>>|<=) (?P<vprio>-?\d+)\): (?P<rule>.*)$"
)


@st.composite
def nodes_st(draw: st.DrawFn) -> list[Node]:
    out = []
    for i in range(draw(st.integers(2, 7))):
        model = draw(st.sampled_from((*MODELS, None))) if i else MODELS[0]
        out.append(
            node(
                f"n{i}",
                model=model,
                gpus=draw(st.sampled_from((1, 2, 4, 8))),
                switch=f"s{draw(st.integers(0, 2))}",
                group=f"g{draw(st.integers(0, 1))}",
                cpu=draw(st.sampled_from((8, 16, 64))),
                memory="64Gi",
                labels={"zone": draw(st.sampled_from(("a", "b")))},
                taints=[TAINT] if draw(st.booleans()) and draw(st.booleans()) else [],
                tee=draw(st.sampled_from((None, None, "tdx"))),
                state=draw(st.sampled_from((NodeState.READY,) * 5 + (NodeState.CORDONED,))),
            )
        )
    return out


@st.composite
def queues_st(draw: st.DrawFn) -> dict[str, QueueSpec]:
    out = {}
    for i in range(draw(st.integers(1, 3))):
        quota: dict[str, float] = draw(
            st.sampled_from(({}, {"*": 4}, {"*": 8}, {"NVIDIA-A100": 6}, {"*": 2.5, "AMD-MI250": 3}))
        )
        doc: dict[str, object] = {
            "name": f"q{i}",
            "quota": quota,
            "kind": draw(st.sampled_from(("training", "inference", "batch"))),
            "cohort": draw(st.sampled_from((None, "c", "c"))),
        }
        if quota and draw(st.booleans()):
            doc["borrowingLimit"] = {k: draw(st.sampled_from((0, 1, 2))) for k in quota}
        if quota and draw(st.booleans()):
            doc["lendingLimit"] = {k: draw(st.sampled_from((0, 1, 4))) for k in quota}
        out[f"q{i}"] = QueueSpec.model_validate(doc)
    return out


@st.composite
def workload_st(draw: st.DrawFn, job_id: str, n_queues: int) -> Workload:
    fractional = draw(st.booleans()) and draw(st.booleans())
    if fractional:
        req = TaskRequest(1000, 1024, 1, draw(st.sampled_from((250, 500, 700))))
        count = draw(st.integers(1, 3))
    else:
        gpus = draw(st.sampled_from((0, 1, 2, 4, 8)))
        req = TaskRequest(
            draw(st.sampled_from((500, 2000, 8000))),
            2048,
            gpus,
            1000 if gpus else 0,
            gpu_models=draw(st.sampled_from(((), (), (MODELS[0],), MODELS))) if gpus else (),
        )
        count = draw(st.integers(1, 4))
    ps = PodSet(
        "worker",
        count,
        req,
        affinity=ZONE_A if draw(st.integers(0, 4)) == 0 else None,
        tolerations=(Toleration(key="dedicated", operator="Exists"),) if draw(st.booleans()) else (),
        node_selector=MappingProxyType({"zone": "b"} if draw(st.integers(0, 5)) == 0 else {}),
        tee="any" if draw(st.integers(0, 6)) == 0 else None,
    )
    gang = draw(st.booleans()) or count == 1
    return Workload(
        job_id=job_id,
        name=job_id,
        queue=f"q{draw(st.integers(0, n_queues - 1))}",
        kind="TrainingJob",
        pod_sets=(ps,),
        priority=draw(st.integers(0, 4)),
        gang=gang,
        spread=not gang,
        created_at=float(draw(st.integers(0, 50))),
        estimated_duration_s=draw(st.sampled_from((None, 20.0, 100.0))),
    )


def check_round(inp: SchedulingInput, r: SchedulingResult, edges: set[tuple[str, str]], name: str) -> None:
    pending = {w.job_id: w for w in inp.pending}
    running = {x.workload.job_id: x for x in inp.running}
    nodes = {n.name: n for n in inp.nodes}
    placed = [p.job_id for p in r.placements]
    assert len(placed) == len(set(placed)) and set(placed) <= set(pending)
    # No over-allocation, fractions, CPU and memory included (free_capacity raises OverAllocation).
    free_capacity(inp.nodes, [x.placement for x in inp.running] + r.placements)
    for p in r.placements:
        w = pending[p.job_id]
        assert sorted(a.rank for a in p.assignments) == list(range(w.task_count)), "gang all-or-nothing"
        sets = {ps.name: ps for ps in w.pod_sets}
        for a in p.assignments:
            ps = sets[a.pod_set]
            n = nodes[a.node]
            assert all(f.admits(n, ps) for f in DEFAULT_FILTERS), (
                f"{a.node} violates a hard filter for {w.job_id}"
            )
            assert len(a.devices) == ps.request.gpu_count and len(set(a.devices)) == len(a.devices)
            assert a.gpu_milli == (ps.request.gpu_milli if ps.request.gpu_count else 0)
    # Quota: any queue that gained usage stays within its limits.
    if name != "first-fit":
        before = QuotaBook(inp.queues)
        after = QuotaBook(inp.queues)
        for x in inp.running:
            before.charge(x.workload.queue, x.placement, nodes)
            after.charge(x.workload.queue, x.placement, nodes)
        for p in r.placements:
            after.charge(pending[p.job_id].queue, p, nodes)
        for p in r.placements:
            q = pending[p.job_id].queue
            if after.unlimited(q):
                continue
            for model in placement_gpu_milli(p, nodes):
                key = after.key_for(q, model)
                used, nominal = after.used(q, key), after.nominal[q].get(key, 0)
                members = after._members(q)
                if not members:
                    assert used <= nominal, f"{q} over nominal quota on {key}"
                    continue
                limit = after.borrow_limit[q]
                if limit is not None and key in limit:
                    assert used <= nominal + limit[key], f"{q} over its borrowing limit on {key}"
                assert after.cohort_used(q, key) <= max(
                    after.cohort_capacity(q, key), before.cohort_used(q, key)
                )
    # Preemption: running victims only, strictly lower priority than a pending beneficiary.
    victims = [x.job_id for x in r.preemptions]
    assert len(victims) == len(set(victims)) and set(victims) <= set(running)
    assert not set(victims) & set(placed)
    for pre in r.preemptions:
        m = BENEFICIARY.match(pre.reason)
        assert m is not None, pre.reason
        beneficiary = pending[m.group("id")]
        victim = running[pre.job_id].workload
        if victim.priority < beneficiary.priority:
            edges.add((beneficiary.job_id, pre.job_id))
            continue
        if m.group("rule").startswith("aging"):
            # A starving beneficiary takes from work submitted after it: a strict order, no cycle.
            assert (victim.created_at, victim.job_id) > (beneficiary.created_at, beneficiary.job_id), (
                pre.reason
            )
            continue
        # Otherwise only a reclaim, from a borrowing queue of the beneficiary's cohort, for a
        # beneficiary whose queue stays within its nominal quota with it admitted.
        assert m.group("rule").startswith("reclaim"), pre.reason
        bq, vq = inp.queues[beneficiary.queue], inp.queues[victim.queue]
        assert bq.cohort and bq.cohort == vq.cohort and victim.queue != beneficiary.queue
        # Bounds on the round's own book: usage only grows by this round's placements and only
        # shrinks by this round's victims.
        grown, shrunk = QuotaBook(inp.queues), QuotaBook(inp.queues)
        for x in inp.running:
            grown.charge(x.workload.queue, x.placement, nodes)
            if x.workload.job_id not in victims:
                shrunk.charge(x.workload.queue, x.placement, nodes)
        for p in r.placements:
            grown.charge(pending[p.job_id].queue, p, nodes)
        assert any(grown.borrowing(victim.queue, k) for k in grown.usage.get(victim.queue, {})), pre.reason
        assert any(
            shrunk.within_nominal(beneficiary.queue, mdl, beneficiary.total_gpu_milli) for mdl in MODELS
        )


def has_cycle(edges: set[tuple[str, str]]) -> bool:
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
    state: dict[str, int] = {}

    def visit(v: str) -> bool:
        state[v] = 1
        for u in graph.get(v, []):
            if state.get(u) == 1 or (state.get(u) is None and visit(u)):
                return True
        state[v] = 2
        return False

    return any(state.get(v) is None and visit(v) for v in list(graph))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(), name=st.sampled_from(("default", "priority", "easy-backfill", "fifo", "sjf", "first-fit"))
)
def test_invariants_hold_round_after_round(data: st.DataObject, name: str) -> None:
    nodes = data.draw(nodes_st())
    queues = data.draw(queues_st())
    n_jobs = data.draw(st.integers(1, 12))
    pending = [data.draw(workload_st(f"j{i}", len(queues))) for i in range(n_jobs)]
    if name == "first-fit":
        scheduler = create_scheduler(name)
    else:
        # A short starvation threshold now and then, so that aging (reservations, preemption of
        # work submitted later) happens within the few rounds of an example.
        starvation = data.draw(st.sampled_from((None, 12 * 3600.0, 15.0)), label="starvation_s")
        scheduler = create_scheduler(name, scorer="bestfit", starvation_s=starvation)
    running: dict[str, RunningWorkload] = {}
    edges: set[tuple[str, str]] = set()
    now = 0.0
    for round_ in range(4):
        inp = SchedulingInput(nodes, queues, list(running.values()), pending, now)
        r = scheduler.schedule(inp)
        check_round(inp, r, edges, name)
        # Coverage of the interesting cases (see pytest --hypothesis-show-statistics).
        event(f"round has preemptions: {bool(r.preemptions)}")
        event(f"round has placements: {bool(r.placements)}")
        event(f"round has quota refusals: {any('quota' in v for v in r.pending_reasons.values())}")
        event(f"round has aging or reclaim preemptions: {any(' <= ' in p.reason for p in r.preemptions)}")
        by_id = {w.job_id: w for w in pending}
        preempted = {p.job_id for p in r.preemptions}
        for job in sorted(preempted):
            pending.append(running.pop(job).workload)
        for p in r.placements:
            running[p.job_id] = RunningWorkload(by_id[p.job_id], p, started_at=now)
        placed = {p.job_id for p in r.placements}
        pending = [w for w in pending if w.job_id not in placed]
        for job in sorted(running):
            if job not in preempted and data.draw(st.integers(0, 3), label=f"finish {job}@{round_}") == 0:
                del running[job]
        # New arrivals of higher priority, to provoke preemption.
        for k in range(data.draw(st.integers(0, 2))):
            w = data.draw(workload_st(f"late{round_}-{k}", len(queues)))
            pending.append(Workload(**{**w.__dict__, "priority": w.priority + 5}))
        now += 10.0
    assert not has_cycle(edges)


def test_cycle_detector_detects() -> None:
    assert has_cycle({("a", "b"), ("b", "a")})
    assert not has_cycle({("a", "b"), ("b", "c"), ("a", "c")})


def test_first_fit_result_is_a_valid_placement() -> None:
    # A fixed case exercised through the same checker, so the checker itself is seen to pass real output.
    nodes = [node("a"), node("b", switch="s1")]
    w = Workload("w", "w", "q0", "TrainingJob", (PodSet("worker", 2, TaskRequest(1000, 1024, 8, 1000)),))
    queues = {"q0": QueueSpec(name="q0")}
    inp = SchedulingInput(nodes, queues, [], [w])
    r = create_scheduler("first-fit").schedule(inp)
    check_round(inp, r, set(), "first-fit")
    assert isinstance(r.placements[0], Placement)
