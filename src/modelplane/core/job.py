"""The job lifecycle, decided in one place.

Controllers *propose* a transition; ``decide`` accepts it, redirects it, or refuses it, through a
short ordered list of rules keyed on (from-state, to-state), as Prefect's orchestration rules do.
Every accepted transition yields an event, so a job's history is the list of its events.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from modelplane.core.errors import InvalidTransition


class JobState(StrEnum):
    PENDING = "Pending"  # waiting for quota and a placement
    ADMITTED = "Admitted"  # placed; the backend is starting its tasks
    RUNNING = "Running"
    PREEMPTED = "Preempted"  # stopped to make room; goes back to Pending
    RECOVERING = "Recovering"  # lost a task or a node; goes back to Pending to be placed again
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE = frozenset({JobState.ADMITTED, JobState.RUNNING})  # holds resources on the pool

P, A, R, PR, RC, S, F, C = (
    JobState.PENDING,
    JobState.ADMITTED,
    JobState.RUNNING,
    JobState.PREEMPTED,
    JobState.RECOVERING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELLED,
)

ALLOWED: dict[JobState, frozenset[JobState]] = {
    P: frozenset({A, C, F}),
    A: frozenset({R, P, S, F, C, RC, PR}),
    R: frozenset({S, F, C, PR, RC}),
    PR: frozenset({P, C}),
    RC: frozenset({P, F, C}),
    S: frozenset(),
    F: frozenset(),
    C: frozenset(),
}


@dataclass(frozen=True)
class JobStatus:
    """The part of a job the state machine reads and writes."""

    state: JobState = JobState.PENDING
    restarts: int = 0
    max_restarts: int = 0
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class Transition:
    """An accepted change of state, to be stored as an event."""

    from_state: JobState
    to_state: JobState
    reason: str
    message: str
    status: JobStatus


class Rule:
    """One orchestration rule: applies to some (from, to) pairs and may redirect the target."""

    from_states: frozenset[JobState] = frozenset()
    to_states: frozenset[JobState] = frozenset()

    def applies(self, current: JobState, proposed: JobState) -> bool:
        return current in self.from_states and proposed in self.to_states

    def apply(self, status: JobStatus, proposed: JobState, reason: str, message: str) -> tuple[JobState, str, str]:
        raise NotImplementedError


class RetryFailedRuns(Rule):
    """A running job whose task failed goes to Recovering while restarts remain, else Failed."""

    from_states = frozenset({A, R})
    to_states = frozenset({F})

    def apply(self, status: JobStatus, proposed: JobState, reason: str, message: str) -> tuple[JobState, str, str]:
        if status.restarts < status.max_restarts:
            n = status.restarts + 1
            return RC, "Retrying", f"{message} (restart {n} of {status.max_restarts})"
        return proposed, reason, message


class LostTasksNeedRestartBudget(Rule):
    """Recovering after a lost node or task spends a restart; with none left the job fails."""

    from_states = frozenset({A, R})
    to_states = frozenset({RC})

    def apply(self, status: JobStatus, proposed: JobState, reason: str, message: str) -> tuple[JobState, str, str]:
        if status.restarts >= status.max_restarts:
            return F, reason, f"{message}; no restarts left (restartPolicy.maxRestarts={status.max_restarts})"
        return proposed, reason, message


RULES: tuple[Rule, ...] = (RetryFailedRuns(), LostTasksNeedRestartBudget())


def decide(status: JobStatus, proposed: JobState, reason: str, message: str = "") -> Transition:
    """Accept, redirect or refuse a proposed transition. Pure: the caller stores the result."""
    current = status.state
    target, why, text = proposed, reason, message
    for rule in RULES:
        if rule.applies(current, target):
            target, why, text = rule.apply(status, target, why, text)
    if target not in ALLOWED[current]:
        raise InvalidTransition(
            f"a job in state {current.value} cannot move to {proposed.value}",
            hint=f"from {current.value} it may move to: "
            + (", ".join(sorted(s.value for s in ALLOWED[current])) or "nothing (it has ended)"),
        )
    restarts = status.restarts + (1 if target is RC else 0)
    new = replace(status, state=target, restarts=restarts, reason=why, message=text)
    return Transition(current, target, why, text, new)
