"""Group commit for the audit log: many concurrent callers, one durable transaction per batch.

``record`` returns only after the entry is committed, so each API call still gets a durable audit
entry, but concurrent calls share the fsync (the way databases group-commit their WAL).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from modelplane.security.audit.entry import AuditEntry
from modelplane.security.audit.sql import AuditLog


class GroupCommitRecorder:
    def __init__(self, log: AuditLog, *, max_batch: int = 1000) -> None:
        self.log = log
        self.max_batch = max_batch
        self._queue: queue.Queue[tuple[AuditEntry, Future[int]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="audit-group-commit", daemon=True)
        self._thread.start()

    def submit(self, entry: AuditEntry) -> Future[int]:
        """Queue an entry; the future resolves to its index once committed."""
        fut: Future[int] = Future()
        self._queue.put((entry, fut))
        return fut

    def record(self, entry: AuditEntry, timeout: float | None = 30.0) -> int:
        return self.submit(entry).result(timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                indexes = self.log.append([e for e, _ in batch])
            except Exception as exc:  # every waiter learns the write failed
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            for (_, fut), idx in zip(batch, indexes, strict=True):
                fut.set_result(idx)
