"""Gradient accumulation that survives a failed micro-batch.

A micro-batch fails when its loss or any gradient is NaN/Inf, or when its forward/backward raises
(an OOM, a bad sample). Its partial gradient must not leak into the update, so gradients are
accumulated in a buffer of our own and ``.grad`` is cleared before every micro-batch: whatever a
failed backward wrote is thrown away. A failed micro-batch may be retried (transient faults),
then dropped. The update is the mean over the micro-batches that survived on all data-parallel
ranks: sum of survivors' gradients / number of survivors, all-reduced once per step. If none
survived, the optimizer step is skipped and the step counter does not move.

Seam for privacy (DP-SGD) and adversarial training: ``loss_fn`` computes the loss of one
micro-batch, and ``grad_hook`` sees each successful micro-batch's gradients before they are added
(clip and noise there, or perturb inputs inside ``loss_fn``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("modelplane.train.accumulation")


@dataclass
class AccumulationStats:
    """Counters exposed as metrics (``modelplane_train_microbatches_total{outcome=...}``)."""

    steps: int = 0
    skipped_steps: int = 0
    ok: int = 0
    dropped: int = 0
    retried: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def as_metrics(self) -> dict[str, float]:
        return {
            "modelplane_train_steps_total": self.steps,
            "modelplane_train_skipped_steps_total": self.skipped_steps,
            "modelplane_train_microbatches_ok_total": self.ok,
            "modelplane_train_microbatches_dropped_total": self.dropped,
            "modelplane_train_microbatches_retried_total": self.retried,
        }


@dataclass
class StepOutcome:
    stepped: bool
    survivors: int  # across all ranks
    attempted: int  # across all ranks
    mean_loss: float | None
    mask: list[list[bool]]  # [rank][micro-batch] survived, identical on every rank


class FaultTolerantAccumulator:
    """Runs one optimizer step over k micro-batches. Collective under data parallelism.

    Pass the bare model (not DDP): the one all-reduce happens here, after the local micro-batches.
    """

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        *,
        max_retries: int = 0,
        process_group: Any = None,
        grad_hook: Callable[[Sequence[Any]], None] | None = None,
        catch: tuple[type[BaseException], ...] = (RuntimeError, ValueError, FloatingPointError),
    ) -> None:
        import torch.distributed as dist

        self.model = model
        self.optimizer = optimizer
        self.max_retries = max_retries
        self.group = process_group
        self.grad_hook = grad_hook
        self.catch = catch
        self.stats = AccumulationStats()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.distributed = (
            dist.is_available() and dist.is_initialized() and dist.get_world_size(process_group) > 1
        )

    def _no_sync(self) -> Any:
        return self.model.no_sync() if hasattr(self.model, "no_sync") else contextlib.nullcontext()

    def _attempt(self, batch: Any, loss_fn: Callable[[Any], Any]) -> tuple[float | None, str]:
        import torch

        for p in self.params:
            p.grad = None  # discard whatever a previous (failed) attempt left behind
        try:
            with self._no_sync():
                loss = loss_fn(batch)
                value = float(loss.detach())
                if not math.isfinite(value):
                    return None, "non-finite loss"
                loss.backward()
        except self.catch as exc:
            return None, f"raised {type(exc).__name__}"
        for p in self.params:
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                return None, "non-finite gradient"
        return value, ""

    def step(self, micro_batches: Iterable[Any], loss_fn: Callable[[Any], Any]) -> StepOutcome:
        import torch
        import torch.distributed as dist

        acc = [torch.zeros_like(p) for p in self.params]
        local_mask: list[bool] = []
        loss_sum = 0.0
        for batch in micro_batches:
            value, reason = self._attempt(batch, loss_fn)
            retries = 0
            while value is None and retries < self.max_retries:
                retries += 1
                self.stats.retried += 1
                value, reason = self._attempt(batch, loss_fn)
            if value is None:
                self.stats.dropped += 1
                self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1
                log.warning("micro-batch %d dropped: %s", len(local_mask), reason)
                local_mask.append(False)
                continue
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
            if self.grad_hook is not None:
                self.grad_hook(grads)
            for a, g in zip(acc, grads, strict=True):
                a.add_(g)
            loss_sum += value
            local_mask.append(True)
            self.stats.ok += 1

        mask = [local_mask]
        if self.distributed:
            k = torch.tensor([len(local_mask)], dtype=torch.int64)
            sizes = [torch.zeros_like(k) for _ in range(dist.get_world_size(self.group))]
            dist.all_gather(sizes, k, group=self.group)
            width = int(max(int(s) for s in sizes))
            mine = torch.zeros(width, dtype=torch.int64)
            mine[: len(local_mask)] = torch.tensor([int(m) for m in local_mask], dtype=torch.int64)
            everyone = [torch.zeros_like(mine) for _ in sizes]
            dist.all_gather(everyone, mine, group=self.group)
            mask = [[bool(v) for v in row[: int(n)]] for row, n in zip(everyone, sizes, strict=True)]
        survivors = sum(sum(row) for row in mask)
        attempted = sum(len(row) for row in mask)

        for p in self.params:
            p.grad = None
        if survivors == 0:
            self.stats.skipped_steps += 1
            log.error("every micro-batch of this step failed; optimizer step skipped")
            return StepOutcome(False, 0, attempted, None, mask)

        flat = torch.cat([a.reshape(-1) for a in acc] + [torch.tensor([loss_sum], dtype=acc[0].dtype)])
        if self.distributed:
            dist.all_reduce(flat, group=self.group)
        flat /= survivors
        offset = 0
        for p, a in zip(self.params, acc, strict=True):
            n = a.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n
        self.optimizer.step()
        for p in self.params:
            p.grad = None
        self.stats.steps += 1
        return StepOutcome(True, survivors, attempted, float(flat[-1]), mask)
