"""The priority of a job, from its task type, its size and its deadline.

Higher runs first. The parts, each bounded so that no one term swamps the others:

* task type: inference 300 (user-facing latency), training 200, federated 200, pipeline 100;
* size: **not** a term. Priority is also a preemption right (strictly higher priority may
  preempt, ``scheduler/preemption.py``), so a size penalty let every small job preempt a large
  run of the same queue and starve it (and broke the reserved-training promise, since a large run
  became "lower priority" than each small newcomer). Size is used where it is harmless: among
  workloads of equal priority the scheduler orders by GPU-seconds, smallest first (SRTF-like),
  and ages them so that a large job is passed over for a bounded time only
  (``scheduler/policy.py``). ``gpu_milli`` and ``estimated_duration_s`` stay parameters so that
  callers need not change;
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
    del gpu_milli, estimated_duration_s  # size orders equals in the scheduler; see the module docstring
    base = TYPE_BASE.get(kind, 100)
    urgency = 0
    if deadline is not None:
        left = deadline - now
        if left <= HOUR:
            urgency = 200
        elif left < WEEK:
            # Linear in log-time between one hour and one week.
            frac = 1 - math.log(left / HOUR) / math.log(WEEK / HOUR)
            urgency = round(200 * frac)
    return base + urgency + queue_priority
