"""Dynamic batching as Triton's dynamic batcher does it: wait up to a delay to fill a batch.

A batch is sent to the model when it holds ``max_batch_size`` rows, or when its oldest request has
waited ``max_queue_delay_s``; the next batch is formed only when the model is free again, so under
load batches fill while the previous one runs. The queue is bounded in rows: a full queue answers
``Overloaded`` (HTTP 429) instead of growing without limit.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from modelplane.serve.errors import NoReplicaAvailable, Overloaded


@dataclass(frozen=True)
class BatchingConfig:
    """``max_batch_size`` 1 with delay 0 turns batching off (every request runs alone)."""

    max_batch_size: int = 16
    max_queue_delay_s: float = 0.002
    max_queue_rows: int = 1024

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.max_queue_delay_s < 0:
            raise ValueError("max_queue_delay_s must be >= 0")
        if self.max_queue_rows < self.max_batch_size:
            raise ValueError("max_queue_rows must be >= max_batch_size")


@dataclass
class _Pending:
    rows: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued: float


@dataclass
class BatchStats:
    """Counters a replica exports (Triton: nv_inference_count / nv_inference_exec_count)."""

    requests: int = 0
    rows: int = 0
    batches: int = 0
    queue_seconds: list[float] = field(default_factory=list)


class DynamicBatcher:
    """Collects rows from concurrent requests into batches for one model instance."""

    def __init__(
        self,
        run: Callable[[np.ndarray], np.ndarray],
        config: BatchingConfig | None = None,
        *,
        on_batch: Callable[[int, int, list[float], float], None] | None = None,
    ) -> None:
        self._run = run
        self.config = config or BatchingConfig()
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batcher")
        self._closed = False
        self._busy = False
        self._last_exec_s = 0.0

    @property
    def outstanding(self) -> int:
        """Requests queued or running."""
        return len(self._queue) + (1 if self._busy else 0)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="dynamic-batcher")

    async def infer(self, rows: np.ndarray) -> np.ndarray:
        """Queue ``rows`` (first axis = batch) and wait for their outputs."""
        if self._closed or self._wakeup is None:
            raise NoReplicaAvailable("the replica is draining", hint="send the request to another replica")
        n = int(rows.shape[0])
        if self._queued_rows + n > self.config.max_queue_rows:
            raise Overloaded(
                f"replica queue full ({self._queued_rows} rows queued, limit {self.config.max_queue_rows})",
                retry_after_s=self._retry_after(),
                hint="retry after the delay, or add replicas",
            )
        loop = asyncio.get_running_loop()
        pending = _Pending(rows, loop.create_future(), loop.time())
        self._queue.append(pending)
        self._queued_rows += n
        self._wakeup.set()
        return await pending.future

    def _retry_after(self) -> float:
        batches_ahead = math.ceil(self._queued_rows / self.config.max_batch_size)
        return max(1.0, batches_ahead * max(self._last_exec_s, self.config.max_queue_delay_s))

    async def _loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = await self._form_batch(loop)
            await self._execute(batch, loop)

    async def _form_batch(self, loop: asyncio.AbstractEventLoop) -> list[_Pending]:
        assert self._wakeup is not None
        cfg = self.config
        deadline = self._queue[0].enqueued + cfg.max_queue_delay_s
        while self._rows_ready() < cfg.max_batch_size and not self._closed:
            wait = deadline - loop.time()
            if wait <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), wait)
            except TimeoutError:
                break
        batch: list[_Pending] = [self._queue.popleft()]
        size = int(batch[0].rows.shape[0])
        while self._queue and size + int(self._queue[0].rows.shape[0]) <= cfg.max_batch_size:
            item = self._queue.popleft()
            size += int(item.rows.shape[0])
            batch.append(item)
        self._queued_rows -= size
        return batch

    def _rows_ready(self) -> int:
        return sum(int(p.rows.shape[0]) for p in self._queue)

    async def _execute(self, batch: list[_Pending], loop: asyncio.AbstractEventLoop) -> None:
        started = loop.time()
        queue_s = [started - p.enqueued for p in batch]
        stacked = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch], axis=0)
        self._busy = True
        try:
            out = await loop.run_in_executor(self._executor, self._run, stacked)
        except Exception as exc:  # the model failed: every request in the batch gets the error
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        finally:
            self._busy = False
            self._last_exec_s = loop.time() - started
        offset = 0
        for p in batch:
            n = int(p.rows.shape[0])
            if not p.future.done():
                p.future.set_result(out[offset : offset + n])
            offset += n
        if self._on_batch is not None:
            self._on_batch(len(batch), int(stacked.shape[0]), queue_s, self._last_exec_s)

    async def drain(self) -> None:
        """Refuse new work, finish everything queued, then stop."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)
