"""Privacy budgets into job events: each epoch's epsilon that a DP-SGD rank reports in its heartbeat
(``modelplane.train.make_private``) becomes a ``PrivacyBudget`` event, and a run stopped by its
budget a ``PrivacyBudgetExhausted`` event, so ``describe job`` and ``GET /jobs/{name}`` show them.

It runs beside the job controller, on the same per-job heartbeat files, and before it in each
round: a rank's last report is usually recorded before the job controller sees the rank exit. A
report that lands just after is still recorded: jobs that stopped running get one more look.
Events already in the store are never written twice (the epochs recorded are read back from
them), so a restarted control plane carries on where it left off.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from modelplane.control.base import Controller
from modelplane.core.errors import NotFound
from modelplane.core.job import JobState
from modelplane.store import JobRecord, Store

log = logging.getLogger("modelplane.control.privacy")
BUDGET_REASON = "PrivacyBudget"
EXHAUSTED_REASON = "PrivacyBudgetExhausted"
_EPOCH = re.compile(r"^epoch (\d+):")


def _has_privacy(job: JobRecord) -> bool:
    return getattr(job.manifest.spec, "privacy", None) is not None


class PrivacyBudgetController(Controller):
    name = "privacy"

    def __init__(self, store: Store, runtime_dir: Path) -> None:
        self.store = store
        self.runtime_dir = runtime_dir
        self._recorded: dict[str, tuple[int, bool]] = {}  # job id -> (last epoch recorded, exhausted recorded)
        self._running: set[str] = set()  # ids of the jobs seen running last round
        self._private: dict[str, bool] = {}  # job id -> has spec.privacy (manifests never change)

    def reconcile(self) -> None:
        running, _ = self.store.list_jobs(states=[JobState.RUNNING], kind="TrainingJob", limit=100_000)
        for j in running:
            if j.id not in self._private:
                self._private[j.id] = _has_privacy(j)
        watched = [j for j in running if self._private[j.id]]
        now = {j.id for j in watched}
        # Jobs that stopped running since the last round: their final report may have come late.
        for job_id in self._running - now:
            try:
                watched.append(self.store.get_job(job_id))
            except NotFound:  # purged meanwhile
                continue
        for job in watched:
            self._sync(job)
        for job_id in self._running - now:
            self._recorded.pop(job_id, None)
        live = {j.id for j in running}
        self._private = {k: v for k, v in self._private.items() if k in live}
        self._running = now

    def _reported(self, job: JobRecord) -> dict[str, Any] | None:
        path = self.runtime_dir / job.id / "heartbeat-0.json"  # rank 0 speaks for the job (DP runs one rank)
        try:
            beat = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        record = beat.get("privacy")
        return record if isinstance(record, dict) else None

    def _already(self, job: JobRecord) -> tuple[int, bool]:
        if job.id not in self._recorded:
            last, exhausted = 0, False
            for e in self.store.list_events(job.id):
                if e.reason == BUDGET_REASON and (m := _EPOCH.match(e.message)):
                    last = max(last, int(m.group(1)))
                elif e.reason == EXHAUSTED_REASON:
                    exhausted = True
            self._recorded[job.id] = (last, exhausted)
        return self._recorded[job.id]

    def _sync(self, job: JobRecord) -> None:
        record = self._reported(job)
        if record is None or record.get("epsilon") is None:
            return  # no report yet, or an adversarial-only job: nothing to account
        last, exhausted = self._already(job)
        delta, target = record.get("delta"), record.get("targetEpsilon")
        for item in record.get("history", []):
            epoch = int(item.get("epoch", 0))
            if epoch <= last or item.get("epsilon") is None:
                continue
            self.store.add_event(job.id, BUDGET_REASON,
                                 f"epoch {epoch}: epsilon {float(item['epsilon']):.4f} at delta {delta:g} "
                                 f"(target {target:g}) after {int(item.get('steps', 0))} steps")
            last = epoch
        if record.get("exhausted") and not exhausted:
            nxt = record.get("nextEpsilon")
            more = f"; one more epoch would reach {float(nxt):.4f}" if nxt is not None else ""
            self.store.add_event(job.id, EXHAUSTED_REASON,
                                 f"privacy budget exhausted after epoch {record.get('epoch')}: epsilon "
                                 f"{float(record['epsilon']):.4f} of target {target:g} at delta {delta:g}{more}; "
                                 "training stops at this epoch boundary")
            exhausted = True
            log.info("job %s: privacy budget exhausted", job.name)
        self._recorded[job.id] = (last, exhausted)
