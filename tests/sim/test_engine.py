"""The discrete-event simulator and the queueing baselines on small hand-made cases."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.core.placement import Placement
from modelplane.core.queue import QueueSpec
from modelplane.scheduler.first_fit import FirstFitScheduler
from modelplane.scheduler.interface import Scheduler, SchedulingInput, SchedulingResult
from modelplane.scheduler.registry import create_scheduler
from modelplane.sim.engine import SimJob, SimulationError, Simulator
from modelplane.sim.policies import create_baseline
from modelplane.sim.workloads import gang_workload, gpu_pool

QUEUES = {"a": QueueSpec(name="a"), "b": QueueSpec(name="b")}


def job(jid: str, gpus: int, submit: float, duration: float, queue: str = "a", estimate: bool = True) -> SimJob:
    return SimJob(gang_workload(jid, queue, gpus, submit, duration if estimate else None), duration)


def make(policy: str) -> Scheduler:
    if policy == "first-fit":
        return FirstFitScheduler()
    if policy == "default":
        return create_scheduler("default")  # the real policy, driven by the same simulator
    return create_baseline(policy)


def run(policy: str, jobs: list[SimJob], nodes: int = 1) -> dict[str, tuple[float | None, float | None]]:
    sched = make(policy)
    res = Simulator(gpu_pool(nodes), QUEUES, sched).run(jobs)
    return {r.job_id: (r.start, r.end) for r in res.records}


def test_fifo_blocks_behind_a_head_that_does_not_fit() -> None:
    jobs = [job("long", 6, 0, 100), job("big", 4, 1, 10), job("small", 2, 2, 10)]
    got = run("fifo", jobs)
    assert got["long"] == (0, 100)
    assert got["big"] == (100, 110)
    assert got["small"] == (100, 110)  # fits at t=2 but FIFO keeps it behind "big"


def test_easy_backfills_only_what_does_not_delay_the_head() -> None:
    jobs = [job("long", 6, 0, 100), job("big", 8, 1, 10), job("short", 2, 2, 50), job("too-long", 2, 3, 500)]
    got = run("easy", jobs)
    assert got["short"] == (2, 52)  # ends before the head's reservation at t=100
    assert got["big"] == (100, 110)  # the head is not delayed
    assert got["too-long"] == (110, 610)  # would hold GPUs the head needs at t=100


def test_easy_lets_a_job_use_gpus_the_head_will_not_need() -> None:
    jobs = [job("long", 6, 0, 100), job("big", 4, 1, 10), job("spare", 2, 2, 500)]
    got = run("easy", jobs)
    assert got["spare"] == (2, 502)  # 2 of the 8 GPUs stay spare when "big" starts at t=100
    assert got["big"] == (100, 110)


def test_srtf_preempts_a_longer_job_for_a_shorter_one() -> None:
    jobs = [job("long", 8, 0, 1000), job("short", 8, 10, 20)]
    res = Simulator(gpu_pool(1), QUEUES, create_baseline("srtf")).run(jobs)
    rec = {r.job_id: r for r in res.records}
    assert rec["short"].start == 10 and rec["short"].end == 30
    assert rec["long"].preemptions == 1
    assert rec["long"].end == 1020  # requeued with the 990 s it had left


def test_tiresias_gives_new_jobs_priority_over_long_runners() -> None:
    jobs = [job("old", 8, 0, 10_000, estimate=False), job("new", 8, 1000, 50, estimate=False)]
    res = Simulator(gpu_pool(1), QUEUES, create_baseline("tiresias"), round_interval=0).run(jobs)
    rec = {r.job_id: r for r in res.records}
    assert rec["new"].start == 1000  # "old" attained 8,000 GPU-s > 3,600: it is in the low queue
    assert rec["old"].preemptions == 1 and rec["old"].end == 10_050


def test_round_interval_delays_starts_to_the_next_tick() -> None:
    res = Simulator(gpu_pool(1), QUEUES, create_baseline("fifo"), round_interval=60).run([job("x", 1, 5, 10)])
    assert res.records[0].start == 60 and res.records[0].waited == 55


class _Broken:
    name = "broken"

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def schedule(self, inp: SchedulingInput) -> SchedulingResult:
        out = FirstFitScheduler().schedule(inp)
        if self.mode == "double" and out.placements:
            p = out.placements[0]
            out.placements.append(Placement("ghost", p.assignments))
        if self.mode == "partial" and out.placements:
            p = out.placements[0]
            out.placements[0] = Placement(p.job_id, p.assignments[:1])
        return out


@pytest.mark.parametrize("mode", ["double", "partial"])
def test_impossible_answers_of_a_policy_are_caught(mode: str) -> None:
    jobs = [job("a", 16, 0, 10)]
    with pytest.raises(SimulationError):
        Simulator(gpu_pool(2), QUEUES, _Broken(mode)).run(jobs)


@settings(max_examples=30, deadline=None)
@given(
    policy=st.sampled_from(["fifo", "srtf", "tiresias", "easy", "first-fit", "default"]),
    spec=st.lists(st.tuples(st.sampled_from([1, 2, 4, 8, 16]), st.integers(0, 500), st.integers(1, 300)), min_size=1, max_size=25),
)
def test_every_job_runs_its_full_duration_and_never_before_submission(policy: str, spec: list[tuple[int, int, int]]) -> None:
    jobs = [job(f"j{i}", g, s, d, queue="ab"[i % 2]) for i, (g, s, d) in enumerate(spec)]
    sched = make(policy)
    res = Simulator(gpu_pool(2), QUEUES, sched).run(jobs)
    for r in res.records:
        assert r.start is not None and r.end is not None
        assert r.start >= r.submit
        assert r.end - r.submit >= r.duration + r.waited - 1e-6
        assert r.waited >= r.start - r.submit - 1e-6
    assert all(0 <= used <= res.capacity_gpus for _, used, _ in res.samples)
    s = res.summary()
    assert s["finished"] == len(jobs) and s["never_started"] == 0
