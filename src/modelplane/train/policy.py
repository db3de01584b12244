"""When to checkpoint: every N steps and/or by wall time at Young's optimal interval.

Pure: the clock is passed in. Young (1974): the interval that minimises lost work plus checkpoint
overhead is sqrt(2 x C x MTBF), C the cost of one checkpoint to training. With asynchronous saves
C is the blocking window, not the whole write, so cheap snapshots allow frequent checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from modelplane.core.errors import InvalidSpec

MAX_INTERVAL_S = 30 * 60.0  # the seed's "every 30 minutes" is the upper bound


def young_interval(save_cost_s: float, mtbf_s: float, *, cap_s: float = MAX_INTERVAL_S) -> float:
    """Young's checkpoint interval in seconds, capped (a failure-free cluster still checkpoints)."""
    if save_cost_s < 0 or mtbf_s <= 0:
        raise InvalidSpec(
            f"save cost {save_cost_s} s and MTBF {mtbf_s} s must be >= 0 and > 0",
            field="mtbf_s",
            hint="pass the measured save cost and the cluster's mean time between failures in seconds",
        )
    return min(cap_s, math.sqrt(2.0 * save_cost_s * mtbf_s))


def mtbf_from_rate(failures: int, gpu_hours: float, gpus: int) -> float:
    """Job-level MTBF in seconds from a cluster's observed failure count over GPU-hours.

    A job on ``gpus`` devices fails when any of them does, so its MTBF shrinks with its size.
    """
    if failures <= 0 or gpu_hours <= 0 or gpus <= 0:
        raise InvalidSpec(
            "failures, gpu_hours and gpus must all be positive",
            field="failures",
            hint="e.g. Llama 3: 466 interruptions over 54 days on 16,384 GPUs",
        )
    per_gpu_mtbf_h = gpu_hours / failures
    return per_gpu_mtbf_h / gpus * 3600.0


@dataclass
class SavePolicy:
    """Decides whether the step that just finished should be checkpointed.

    ``every_steps``: save when the step count is a multiple (0 disables). ``mtbf_s``: enables the
    wall-time trigger at Young's interval from the measured save cost; ``interval_s`` fixes the
    interval instead. Both are capped at ``max_interval_s``.
    """

    every_steps: int = 0
    mtbf_s: float | None = None
    interval_s: float | None = None
    max_interval_s: float = MAX_INTERVAL_S
    cost_smoothing: float = 0.5
    measured_cost_s: float | None = None
    last_save_time: float | None = None
    last_save_step: int | None = None
    history: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.every_steps < 0:
            raise InvalidSpec("every_steps must be >= 0", field="every_steps", hint="0 disables step saves")
        if self.interval_s is not None and self.interval_s <= 0:
            raise InvalidSpec(
                "interval_s must be > 0", field="interval_s", hint="omit it to use Young's formula"
            )

    @property
    def uses_wall_time(self) -> bool:
        return self.mtbf_s is not None or self.interval_s is not None

    def current_interval(self) -> float:
        """Seconds between time-triggered saves; the cap until a save cost has been measured."""
        if self.interval_s is not None:
            return min(self.interval_s, self.max_interval_s)
        if self.mtbf_s is None or self.measured_cost_s is None:
            return self.max_interval_s
        return young_interval(self.measured_cost_s, self.mtbf_s, cap_s=self.max_interval_s)

    def start(self, now: float, step: int = 0) -> None:
        """Start the clock (at launch or resume): the first time-triggered save is one interval away."""
        if self.last_save_time is None:
            self.last_save_time = now
        if self.last_save_step is None:
            self.last_save_step = step

    def due(self, step: int, now: float) -> str | None:
        """The reason to save after ``step``, or None."""
        if self.last_save_step == step:
            return None
        if self.every_steps and step > 0 and step % self.every_steps == 0:
            return "steps"
        if self.uses_wall_time:
            self.start(now, step)
            assert self.last_save_time is not None
            if now - self.last_save_time >= self.current_interval():
                return "wall_time"
        return None

    def record_save(self, step: int, now: float, cost_s: float) -> None:
        """Account a save: ``cost_s`` is what training paid (the blocking window for async saves)."""
        self.last_save_time = now
        self.last_save_step = step
        self.history.append(cost_s)
        if self.measured_cost_s is None:
            self.measured_cost_s = cost_s
        else:
            a = self.cost_smoothing
            self.measured_cost_s = a * cost_s + (1 - a) * self.measured_cost_s
