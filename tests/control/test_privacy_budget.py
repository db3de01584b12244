"""The privacy-budget controller: a DP rank's heartbeat reports become PrivacyBudget events (one per
epoch, never twice, also across a control-plane restart) and a PrivacyBudgetExhausted event."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelplane.control.privacy import BUDGET_REASON, EXHAUSTED_REASON, PrivacyBudgetController
from modelplane.control.scheduling import SchedulerController
from modelplane.core.job import JobState
from modelplane.platform import make_scheduler
from modelplane.store import JobRecord, Store
from modelplane.train.heartbeat import FileHeartbeat
from tests.helpers import gpu_node, queue, training_doc

DP = {"differentialPrivacy": {"targetEpsilon": 2.5, "delta": 1e-5, "noiseMultiplier": 1.0}}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    s.upsert_node(gpu_node("n1"))
    s.upsert_queue(queue())
    yield s
    s.close()


def running_job(store: Store, name: str, privacy: Any = DP) -> JobRecord:
    job = store.create_job(training_doc(name, replicas=1, accelerators=0,
                                        **({"privacy": privacy} if privacy else {})))
    SchedulerController(store, make_scheduler("default"), time.time).reconcile()
    return store.transition_job(job.id, JobState.RUNNING, "Started")


def report(runtime: Path, job: JobRecord, epochs: list[float], exhausted: bool = False) -> None:
    """What modelplane.train.make_private writes into rank 0's heartbeat after each epoch."""
    hb = FileHeartbeat(str(runtime / job.id / "heartbeat-{rank}.json"), rank=0)
    history = [{"epoch": i + 1, "epsilon": e, "steps": 20 * (i + 1)} for i, e in enumerate(epochs)]
    hb.beat(20 * len(epochs), privacy={"epoch": len(epochs), "steps": 20 * len(epochs), "exhausted": exhausted,
                                       "history": history, "epsilon": epochs[-1], "delta": 1e-5,
                                       "targetEpsilon": 2.5, "nextEpsilon": 2.87 if exhausted else None})


def events(store: Store, job: JobRecord, reason: str) -> list[str]:
    return [e.message for e in store.list_events(job.id) if e.reason == reason]


def test_each_epoch_becomes_one_event_and_exhaustion_one_more(store: Store, tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    ctl = PrivacyBudgetController(store, runtime)
    job = running_job(store, "dp")
    ctl.reconcile()  # no heartbeat yet: nothing
    assert events(store, job, BUDGET_REASON) == []
    report(runtime, job, [1.995, 2.478])
    ctl.reconcile()
    ctl.reconcile()
    assert events(store, job, BUDGET_REASON) == [
        "epoch 1: epsilon 1.9950 at delta 1e-05 (target 2.5) after 20 steps",
        "epoch 2: epsilon 2.4780 at delta 1e-05 (target 2.5) after 40 steps"]
    report(runtime, job, [1.995, 2.478], exhausted=True)
    ctl.reconcile()
    (msg,) = events(store, job, EXHAUSTED_REASON)
    assert "after epoch 2" in msg and "2.4780 of target 2.5" in msg and "2.8700" in msg
    ctl.reconcile()
    assert len(events(store, job, EXHAUSTED_REASON)) == 1 and len(events(store, job, BUDGET_REASON)) == 2


def test_a_report_that_lands_as_the_job_ends_is_still_recorded(store: Store, tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    ctl = PrivacyBudgetController(store, runtime)
    job = running_job(store, "dp")
    ctl.reconcile()
    report(runtime, job, [1.0, 1.5, 2.0])
    store.transition_job(job.id, JobState.SUCCEEDED, "Completed")  # the job controller saw the exit first
    ctl.reconcile()
    assert len(events(store, job, BUDGET_REASON)) == 3
    report(runtime, job, [1.0, 1.5, 2.0, 2.2])
    ctl.reconcile()  # finished jobs get one more look, not more
    assert len(events(store, job, BUDGET_REASON)) == 3


def test_a_restarted_control_plane_does_not_repeat_events(store: Store, tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    job = running_job(store, "dp")
    report(runtime, job, [1.0, 1.5])
    PrivacyBudgetController(store, runtime).reconcile()
    report(runtime, job, [1.0, 1.5, 2.0], exhausted=True)  # a resumed rank reports the restored history too
    again = PrivacyBudgetController(store, runtime)
    again.reconcile()
    assert [m.split(":")[0] for m in events(store, job, BUDGET_REASON)] == ["epoch 1", "epoch 2", "epoch 3"]
    assert len(events(store, job, EXHAUSTED_REASON)) == 1
    PrivacyBudgetController(store, runtime).reconcile()
    assert len(events(store, job, EXHAUSTED_REASON)) == 1


def test_jobs_without_differential_privacy_are_left_alone(store: Store, tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    plain = running_job(store, "plain", privacy=None)
    adv = running_job(store, "adv", privacy={"adversarial": {"method": "fgsm", "epsilon": 0.1}})
    FileHeartbeat(str(runtime / adv.id / "heartbeat-{rank}.json")).beat(
        5, privacy={"epoch": 1, "steps": 5, "exhausted": False, "history": [{"epoch": 1, "steps": 5}],
                    "adversarial": "fgsm"})
    report(runtime, plain, [1.0])
    PrivacyBudgetController(store, runtime).reconcile()
    assert store.list_events(adv.id) and not events(store, adv, BUDGET_REASON)
    assert not events(store, plain, BUDGET_REASON)
