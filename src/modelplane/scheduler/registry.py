"""Schedulers by name, as a user or the simulator picks them: ``create_scheduler("default")``.

Names:

* ``default``: the full policy (fair-share order, quota and borrowing, EASY backfill, preemption,
  topology-aware gangs, spread, the default node scorer of ``scheduler/scores``);
* ``priority``: priority order across all queues, greedy (no reservation), with preemption;
* ``easy-backfill``: submission order with EASY backfill, no preemption;
* ``fifo``: submission order, a blocked head stops everyone behind it, no preemption;
* ``sjf``: shortest runtime estimate first, greedy, no preemption;
* ``first-fit``: ``FirstFitScheduler``, the simplest correct baseline (takes no options).

Options of the policy variants (all keyword, all optional): ``scorer`` (a registered scorer name,
or a ``NodeScorer`` object), ``order`` (fair | priority | fifo | sjf), ``quota``, ``backfill``,
``strict_fifo``, ``preemption``, ``max_preemptors``, ``starvation_s`` (aging threshold, None = off),
``max_starving_reservations``, ``borrow_order`` (fair | size: who gets lent capacity),
``starving_order`` (age | size), ``starving_head``, ``reservation_spare``,
``backfill_each_reservation``, ``workload_mix`` (the task sizes FGD measures
fragmentation against), ``seed``, and for placement ``max_candidates`` (None = score every
feasible node, as the FGD paper's simulator does), ``topology``, ``spread``, ``domain_tries``.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from modelplane.core.errors import ModelplaneError
from modelplane.scheduler.first_fit import FirstFitScheduler
from modelplane.scheduler.interface import Scheduler
from modelplane.scheduler.placement import PlacementOptions
from modelplane.scheduler.policy import ORDERS, PolicyOptions, PolicyScheduler
from modelplane.scheduler.scoring import NodeScorer, create_scorer, scorer_names


class UnknownScheduler(ModelplaneError):
    """A scheduler name or option that does not exist."""


VARIANTS: dict[str, PolicyOptions] = {
    "default": PolicyOptions(),
    "priority": PolicyOptions(order="priority", backfill=False),
    "easy-backfill": PolicyOptions(order="fifo", backfill=True, preemption=False),
    "fifo": PolicyOptions(order="fifo", backfill=False, strict_fifo=True, preemption=False),
    "sjf": PolicyOptions(order="sjf", backfill=False, preemption=False),
}
_POLICY_FIELDS = {f.name for f in fields(PolicyOptions)} - {"placement"}
_PLACEMENT_FIELDS = {f.name for f in fields(PlacementOptions)}


def scheduler_names() -> list[str]:
    return sorted([*VARIANTS, "first-fit"])


def default_scorer_name() -> str:
    from modelplane.scheduler import scores

    return scores.DEFAULT_SCORER


def resolve_scorer(scorer: str | NodeScorer | None) -> NodeScorer:
    """A scorer by name (registered by ``modelplane.scheduler.scores``) or as given."""
    from modelplane.scheduler import scores  # noqa: F401  (registers the scorers)

    if scorer is None:
        scorer = default_scorer_name()
    if not isinstance(scorer, str):
        return scorer
    try:
        return create_scorer(scorer)
    except KeyError:
        raise UnknownScheduler(
            f"unknown node scorer {scorer!r}",
            hint=f"choose one of: {', '.join(scorer_names())}",
            field="scorer",
        ) from None


def create_scheduler(name: str = "default", **options: Any) -> Scheduler:
    """Build a scheduler by name; unknown names or options raise ``UnknownScheduler``."""
    if name == "first-fit":
        if options:
            raise UnknownScheduler(f"scheduler 'first-fit' takes no options, got {', '.join(sorted(options))}",
                                   field="options")
        return FirstFitScheduler()
    if name not in VARIANTS:
        raise UnknownScheduler(f"unknown scheduler {name!r}", hint=f"choose one of: {', '.join(scheduler_names())}",
                               field="scheduler")
    unknown = set(options) - _POLICY_FIELDS - _PLACEMENT_FIELDS - {"scorer"}
    if unknown:
        known = ", ".join(sorted(_POLICY_FIELDS | _PLACEMENT_FIELDS | {"scorer"}))
        raise UnknownScheduler(f"unknown option(s) for scheduler {name!r}: {', '.join(sorted(unknown))}",
                               hint=f"known options: {known}", field="options")
    if "order" in options and options["order"] not in ORDERS:
        raise UnknownScheduler(f"order must be one of {', '.join(ORDERS)}, got {options['order']!r}", field="order")
    base = VARIANTS[name]
    placement = replace(base.placement, **{k: v for k, v in options.items() if k in _PLACEMENT_FIELDS})
    policy = replace(base, placement=placement, **{k: v for k, v in options.items() if k in _POLICY_FIELDS})
    return PolicyScheduler(name, policy, resolve_scorer(options.get("scorer")))
