"""Guard stages and the pipeline that runs them and reports every decision.

A guard looks at text and returns a decision: allow, flag (allowed but recorded), redact (allowed
with the text rewritten) or block. The pipeline runs input guards before the model and output
guards after it, stops at the first block, and hands each decision to every callback (the audit
log, metrics) — guards themselves never do I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Action(StrEnum):
    ALLOW = "allow"
    FLAG = "flag"
    REDACT = "redact"
    BLOCK = "block"


@dataclass(frozen=True)
class GuardDecision:
    guard: str
    stage: str  # "input" or "output"
    action: Action
    score: float = 0.0
    reasons: tuple[str, ...] = ()
    text: str | None = None  # the rewritten text when action is REDACT
    latency_s: float = 0.0


class Guard(Protocol):
    """One stage. ``check`` must be pure and thread-safe; the pipeline times it."""

    name: str

    def check(self, text: str) -> GuardDecision: ...


DecisionCallback = Callable[[GuardDecision, dict[str, str]], None]


@dataclass(frozen=True)
class GuardVerdict:
    allowed: bool
    text: str
    decisions: tuple[GuardDecision, ...]

    @property
    def blocked_by(self) -> GuardDecision | None:
        return next((d for d in self.decisions if d.action is Action.BLOCK), None)


@dataclass
class GuardPipeline:
    """Input and output guards plus the callbacks that record their decisions."""

    input_guards: list[Guard] = field(default_factory=list)
    output_guards: list[Guard] = field(default_factory=list)
    callbacks: list[DecisionCallback] = field(default_factory=list)

    def check_input(self, text: str, context: dict[str, str] | None = None) -> GuardVerdict:
        return self._run(self.input_guards, "input", text, context or {})

    def check_output(self, text: str, context: dict[str, str] | None = None) -> GuardVerdict:
        return self._run(self.output_guards, "output", text, context or {})

    def _run(self, guards: list[Guard], stage: str, text: str, context: dict[str, str]) -> GuardVerdict:
        decisions: list[GuardDecision] = []
        for guard in guards:
            t0 = time.perf_counter()
            d = guard.check(text)
            d = GuardDecision(d.guard, stage, d.action, d.score, d.reasons, d.text, time.perf_counter() - t0)
            decisions.append(d)
            for cb in self.callbacks:
                cb(d, context)
            if d.action is Action.BLOCK:
                return GuardVerdict(False, text, tuple(decisions))
            if d.action is Action.REDACT and d.text is not None:
                text = d.text
        return GuardVerdict(True, text, tuple(decisions))
