"""The priority of a job, from its task type, its size and its deadline.

Higher runs first. The parts, each bounded so that no one term swamps the others:

* task type: inference 300 (user-facing latency), training 200, federated 200, pipeline 100;
* size: large jobs lose a little (log2 of GPU-hours, up to -60), so that a flood of small jobs
  does not wait behind one giant run; a giant run is not starved forever because the scheduler
  ages it: past ``PolicyOptions.starvation_s`` pending it goes first, holds a reservation and may
  preempt work of no higher priority submitted after it (``scheduler/policy.py``);
* deadline: up to +200 as the deadline nears (full bonus within one hour; none beyond a week);
* the queue's own priority and an explicit ``spec.priority`` override everything.

The clock is an argument: this stays a pure function.
"""

from __future__ import annotations

import math

TYPE_BASE = {"InferenceDeployment": 300, "TrainingJob": 200, "FederatedJob": 200, "Pipeline": 100}
HOUR = 3600.0
WEEK = 7 * 24 * HOUR


def compute_priority(
    kind: str,
    gpu_milli: int,
    estimated_duration_s: float | None,
    deadline: float | None,
    now: float,
    queue_priority: int = 0,
    explicit: int | None = None,
) -> int:
    if explicit is not None:
        return explicit + queue_priority
    base = TYPE_BASE.get(kind, 100)
    gpu_hours = (gpu_milli / 1000.0) * ((estimated_duration_s or HOUR) / HOUR)
    size_penalty = min(60, round(10 * math.log2(1 + gpu_hours)))
    urgency = 0
    if deadline is not None:
        left = deadline - now
        if left <= HOUR:
            urgency = 200
        elif left < WEEK:
            # Linear in log-time between one hour and one week.
            frac = 1 - math.log(left / HOUR) / math.log(WEEK / HOUR)
            urgency = round(200 * frac)
    return base - size_penalty + urgency + queue_priority
