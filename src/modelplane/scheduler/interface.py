"""The seam between the control plane and a scheduling policy.

The control plane builds a ``SchedulingInput`` snapshot from the store, calls ``schedule``, and
writes the result back through the job state machine. A policy never reads the clock (``now`` is
given), the store, or the network, so the live system, the simulator and the benchmarks run the
very same code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from modelplane.core.node import Node
from modelplane.core.placement import Placement
from modelplane.core.queue import QueueSpec
from modelplane.core.workload import Workload


@dataclass(frozen=True)
class RunningWorkload:
    """A workload that holds resources (Admitted or Running), with where it runs."""

    workload: Workload
    placement: Placement
    started_at: float = 0.0
    last_checkpoint_at: float | None = None


@dataclass(frozen=True)
class SchedulingInput:
    nodes: Sequence[Node]
    queues: Mapping[str, QueueSpec]
    running: Sequence[RunningWorkload]
    pending: Sequence[Workload]
    now: float = 0.0


@dataclass(frozen=True)
class Preemption:
    job_id: str
    reason: str  # names the job it makes room for and why it was chosen


@dataclass
class SchedulingResult:
    placements: list[Placement] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    # job_id -> one-line explanation of why it was not placed this round.
    pending_reasons: dict[str, str] = field(default_factory=dict)


class Scheduler(Protocol):
    """A scheduling policy: one round over a snapshot of the pool."""

    name: str

    def schedule(self, inp: SchedulingInput) -> SchedulingResult: ...
