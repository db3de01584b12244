"""Admission: team quotas per accelerator model, cohorts that lend idle quota, fair shares.

Admission is separate from placement, as in Kueue: a workload is first checked against its queue's
quota, and only then placed on nodes. All amounts are milli-devices (1000 = one accelerator).

Rules (they mirror Kueue's ClusterQueue/cohort model):

* **Flavor key.** A queue's usage on accelerator model ``M`` is charged to the key ``M`` when its
  ``quota`` names ``M``, else to ``*`` when it has one, else to ``M`` with a nominal quota of 0.
  Lending happens between quotas of the same key (a ``*`` quota lends to ``*`` quotas).
* **Nominal quota.** A queue outside any cohort admits a workload only while its usage stays within
  ``quota``. A queue whose ``quota`` is empty is unlimited (no admission check): the embedded
  single-user setup needs no quota to be configured.
* **Borrowing.** In a cohort, the members' lendable quota (``min(quota, lendingLimit)``) forms a
  shared pool; the rest (``quota - lendingLimit``) is guaranteed to its owner. A queue may go over its
  nominal quota (borrow) by at most ``borrowingLimit`` (unset = unlimited), as long as the cohort's
  usage beyond the guaranteed parts fits in the pool.
* **Reclaim.** A queue that would still be within its nominal quota but finds the pool lent out
  preempts the borrowers of its cohort **regardless of priority** (Kueue's ``reclaimWithinCohort:
  Any``): quota lent is lent at the borrower's risk. See ``preemption.py``.
* **Fair sharing.** Queues take turns by weighted dominant-resource share (DRF): a queue's share is
  its largest usage over the models it uses, relative to its cohort's nominal quota of that key,
  divided by its ``weight``. The lowest share goes next, so a queue that borrowed much waits for one
  that used little.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from modelplane.core.node import Node
from modelplane.core.placement import Placement
from modelplane.core.quantity import format_milli
from modelplane.core.queue import ANY_MODEL, QueueSpec


@dataclass(frozen=True)
class QuotaVerdict:
    ok: bool
    reclaimable: bool = False  # within nominal quota, but the cohort has lent it out
    reason: str = ""
    # Refused only because the cohort's shared pool is in use right now (not by the queue's own
    # nominal quota or borrowing limit): it would be admitted once enough of the cohort is free.
    cohort_full: bool = False


class QuotaBook:
    """Usage per queue and flavor key, and the admission checks over it."""

    def __init__(self, queues: Mapping[str, QueueSpec]) -> None:
        self.queues = queues
        self.nominal: dict[str, dict[str, int]] = {q: s.quota_milli() for q, s in queues.items()}
        self.borrow_limit: dict[str, dict[str, int] | None] = {
            q: s.borrowing_limit_milli() for q, s in queues.items()
        }
        self.lend_limit: dict[str, dict[str, int] | None] = {
            q: s.lending_limit_milli() for q, s in queues.items()
        }
        self.usage: dict[str, dict[str, int]] = {q: {} for q in queues}
        self.cohorts: dict[str, list[str]] = {}
        for q, s in sorted(queues.items()):
            if s.cohort and self.nominal[q]:
                self.cohorts.setdefault(s.cohort, []).append(q)

    # -- keys and amounts --------------------------------------------------------------------------

    def unlimited(self, queue: str) -> bool:
        return not self.nominal.get(queue)

    def key_for(self, queue: str, model: str) -> str:
        nominal = self.nominal.get(queue, {})
        if model in nominal:
            return model
        return ANY_MODEL if ANY_MODEL in nominal else model

    def _lendable(self, queue: str, key: str) -> int:
        nominal = self.nominal[queue].get(key, 0)
        limits = self.lend_limit[queue]
        if limits is not None and key in limits:
            return min(nominal, limits[key])
        return nominal

    def _guaranteed(self, queue: str, key: str) -> int:
        return self.nominal[queue].get(key, 0) - self._lendable(queue, key)

    def _members(self, queue: str) -> list[str]:
        cohort = self.queues[queue].cohort
        return self.cohorts.get(cohort, []) if cohort else []

    def cohort_capacity(self, queue: str, key: str) -> int:
        return sum(self._lendable(m, key) for m in self._members(queue))

    def cohort_used(self, queue: str, key: str) -> int:
        """Usage beyond the guaranteed parts, summed over the cohort: what the shared pool carries."""
        return sum(max(0, self.usage[m].get(key, 0) - self._guaranteed(m, key)) for m in self._members(queue))

    def used(self, queue: str, key: str) -> int:
        return self.usage.get(queue, {}).get(key, 0)

    def borrowing(self, queue: str, key: str) -> bool:
        return not self.unlimited(queue) and self.used(queue, key) > self.nominal[queue].get(key, 0)

    def within_nominal(self, queue: str, model: str, milli: int) -> bool:
        """Would ``queue`` stay within its own nominal quota of ``model`` after taking ``milli`` more?"""
        if self.unlimited(queue):
            return False  # no quota: nothing of its own to reclaim
        key = self.key_for(queue, model)
        nominal = self.nominal[queue].get(key, 0)
        return nominal > 0 and self.used(queue, key) + milli <= nominal

    # -- accounting --------------------------------------------------------------------------------

    def charge(self, queue: str, placement: Placement, nodes: Mapping[str, Node], sign: int = 1) -> None:
        for model, milli in placement_gpu_milli(placement, nodes).items():
            key = self.key_for(queue, model)
            u = self.usage.setdefault(queue, {})
            u[key] = u.get(key, 0) + sign * milli

    # -- checks ------------------------------------------------------------------------------------

    def check(self, queue: str, model: str, milli: int) -> QuotaVerdict:
        """May ``queue`` take ``milli`` more of ``model``? With the reason when not."""
        if milli <= 0 or self.unlimited(queue):
            return QuotaVerdict(True)
        key = self.key_for(queue, model)
        nominal = self.nominal[queue].get(key, 0)
        used = self.used(queue, key)
        new = used + milli
        label = model if key == model else f"{model} (quota {key!r})"
        members = self._members(queue)
        if not members:
            if new <= nominal:
                return QuotaVerdict(True)
            return QuotaVerdict(
                False,
                reason=(
                    f"queue {queue} over quota for {label} ({format_milli(used)}/{format_milli(nominal)} used, "
                    f"needs {format_milli(milli)}; not in a cohort to borrow)"
                ),
            )
        limits = self.borrow_limit[queue]
        if limits is not None and key in limits and new > nominal + limits[key]:
            return QuotaVerdict(
                False,
                reason=(
                    f"queue {queue} at its borrowing limit for {label} ({format_milli(used)} used of "
                    f"{format_milli(nominal)} quota + {format_milli(limits[key])} borrowable, "
                    f"needs {format_milli(milli)})"
                ),
            )
        guaranteed = self._guaranteed(queue, key)
        pool_used = self.cohort_used(queue, key)
        after = pool_used - max(0, used - guaranteed) + max(0, new - guaranteed)
        capacity = self.cohort_capacity(queue, key)
        if after <= capacity:
            return QuotaVerdict(True)
        lend = max(0, capacity - pool_used - max(0, nominal - max(used, guaranteed)))
        cohort = self.queues[queue].cohort
        if new <= nominal:
            return QuotaVerdict(
                False,
                reclaimable=True,
                cohort_full=True,
                reason=(
                    f"queue {queue} is within its quota for {label} ({format_milli(used)}/"
                    f"{format_milli(nominal)} used) but cohort {cohort} has lent it out; "
                    "reclaiming from borrowers of lower priority"
                ),
            )
        return QuotaVerdict(
            False,
            cohort_full=True,
            reason=(
                f"queue {queue} over quota for {label} ({format_milli(used)}/{format_milli(nominal)} used, "
                f"cohort {cohort} has {format_milli(lend)} to lend, needs {format_milli(milli)})"
            ),
        )

    def share(self, queue: str) -> float:
        """Weighted dominant share (DRF) of a queue: lower goes first."""
        usage = self.usage.get(queue, {})
        if not usage:
            return 0.0
        spec = self.queues[queue]
        members = self._members(queue) or [queue]
        dominant = 0.0
        for key, used in usage.items():
            denominator = sum(self.nominal.get(m, {}).get(key, 0) for m in members)
            dominant = max(dominant, used / max(denominator, 1000))
        return dominant / spec.weight


def placement_gpu_milli(placement: Placement, nodes: Mapping[str, Node]) -> dict[str, int]:
    """Milli-devices a placement uses per accelerator model."""
    out: dict[str, int] = {}
    for a in placement.assignments:
        if not a.devices:
            continue
        node = nodes.get(a.node)
        model = node.gpu_model if node is not None and node.gpu_model else "unknown"
        out[model] = out.get(model, 0) + a.gpu_milli * len(a.devices)
    return out


def admissible_models(
    book: QuotaBook, queue: str, models: Iterable[str], milli: int
) -> tuple[list[str], list[QuotaVerdict]]:
    """Models on which the queue has room for the whole demand, and the refusals of the others.

    Admitting on these models only is sound for a gang split over several of them: each part is at
    most the whole demand, which fits on each.
    """
    ok: list[str] = []
    refused: list[QuotaVerdict] = []
    for m in models:
        v = book.check(queue, m, milli)
        if v.ok:
            ok.append(m)
        else:
            refused.append(v)
    return ok, refused
