"""Sharded, asynchronous, atomically committed checkpoints on torch.distributed.checkpoint (DCP).

Layout under the root URL::

    step-000000001200/
        __0_0.distcp, __1_0.distcp, ...   tensors, one file per rank: raw bytes at 4 KiB offsets
        .metadata                          DCP's index of the tensors (where each chunk lies)
        extras-rank00000.pt ...            per-rank small state: RNG, scheduler, data position
        MANIFEST.json                      written last, by rank 0: files, sizes, checksums

Why this shape:
- DCP plans the save (de-duplicates replicated data-parallel tensors across ranks) and the load
  (reshards, so a checkpoint from 4 ranks loads on 2 or 8). Only the storage layer is ours
  (:func:`~modelplane.train.storage.raw_writer`): each rank's tensors go into one file as raw
  bytes, written sequentially with O_DIRECT where possible (by an I/O thread, while the next
  batch is gathered), checksummed in the same pass; DCP's own writer pickled every tensor and the
  manifest read the file back again. A rank's files (data, ``.metadata``, extras) are fsynced
  together before its commit vote, one journal commit instead of one each (``group_fsync``):
  measured on a loaded 2-core machine, the I/O thread cut the disk's idle time between writes
  from a median 58 to 26 ms per 1.2 GB save and the grouped fsync the tail after the last write
  from 48 to 25 ms.
  The reader also loads DCP's own encoding, and ``dcp.load`` with
  :func:`~modelplane.train.storage.raw_reader` loads these checkpoints outside the manager.
- An asynchronous save by default copies nothing before the disk: the write streams parameters
  and optimizer state straight from the live tensors while forward and backward (which only read
  them) run, and the next optimizer step first copies into a preallocated host buffer only what
  the write has not read yet (:class:`~modelplane.train.staging.LiveSource`). On this 2-core
  machine the memory copy had been the bound of the whole save. Without an optimizer to fence
  on (or with ``overlap_staging=False``, or state on a GPU) the tensors are copied into the host
  buffer first (:mod:`modelplane.train.staging`) and the write streams it while it is still being
  filled. The write, the commit and the peer-memory mirror run in a background thread on a
  process group of their own (a save on the training group deadlocked DDP here; torchtitan also
  keeps a separate group). A synchronous save writes from the live tensors too.
- Per-step agreement (save now? preempted?) runs on a third small group from the training thread,
  so the two never interleave collectives on one group.
- The manifest is the commit: a folder without one does not exist for resume; a file that does
  not match its checksum makes the checkpoint corrupt, reported by name, and resume falls back to
  the previous complete one.
- After a resume from the durable tier the loaded step is put back into peer memory under the
  current placement (after a migration the old copy sits on nodes the job no longer uses).
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from modelplane.train import rng
from modelplane.train.errors import CheckpointError, CorruptCheckpoint, NoCheckpoint, require_torch
from modelplane.train.manifest import (
    CHECKSUMS,
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    check_algorithm,
    default_algorithm,
    digest_bytes,
    digest_stream,
)
from modelplane.train.peer_memory import PeerMemoryError, PeerMemoryTier, namespace_for, urls_from_env
from modelplane.train.policy import SavePolicy
from modelplane.train.preempt import NoPreemption, PreemptionWatcher
from modelplane.train.staging import HostSnapshot, LiveSource, Progress, Unsupported
from modelplane.train.storage import QUEUED, Store, fsync_paths, raw_reader, raw_writer

log = logging.getLogger("modelplane.train.checkpoint")

_STEP_DIR = re.compile(r"^step-(\d{12})$")
_SHARD_OWNER = re.compile(r"^__(\d+)_")
_EXTRAS_OWNER = re.compile(r"^extras-rank(\d+)\.pt$")


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def step_dir(step: int) -> str:
    return f"step-{step:012d}"


def extras_name(rank: int) -> str:
    return f"extras-rank{rank:05d}.pt"


def saved_files_of_rank(manifest: Manifest, rank: int) -> list[str]:
    """The files rank ``rank`` of the saving job wrote (its shard, its extras; ``.metadata`` for
    rank 0), as listed in the manifest: what that rank's peer-memory copy holds."""
    mine = []
    for name in sorted(manifest.files):
        m = _SHARD_OWNER.match(name) or _EXTRAS_OWNER.match(name)
        if (int(m.group(1)) if m else 0) == rank:
            mine.append(name)
    return mine


@dataclass
class SaveRecord:
    """What one save cost. ``blocking_s`` is what training waited; ``total_s`` until committed."""

    step: int
    path: str
    asynchronous: bool
    blocking_s: float
    total_s: float | None = None
    bytes_written: int | None = None
    error: str | None = None
    mirrored: bool | None = None  # copied to the peer-memory tier (None: tier off)
    # written from the live tensors: bytes the next optimizer step had to copy first (None: not
    # written from the live tensors, or no step came before the write finished)
    staged_bytes: int | None = None


@dataclass
class StepDecision:
    """The agreed outcome of :meth:`CheckpointManager.maybe_save` at a step boundary."""

    saved: bool
    stop: bool = False
    reason: str | None = None


@dataclass
class _Dist:
    rank: int = 0
    world_size: int = 1
    ckpt_group: Any = None
    ctl_group: Any = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


@dataclass
class CheckpointManager:
    """Saves and restores model, optimizer, scheduler, RNG and data position of a training job.

    Call :meth:`track` once with the objects to checkpoint, :meth:`resume` before the first step,
    and :meth:`maybe_save` after every optimizer step. Collective: every rank must make the same
    calls in the same order.
    """

    url: str
    keep_last: int = 3
    policy: SavePolicy = field(default_factory=SavePolicy)
    asynchronous: bool = True
    checksum: str = "auto"
    fsync: bool = True
    # None (default): overlap the host copy (or, with write_from_live, the write itself) with the
    # next forward/backward whenever an optimizer is tracked (its step waits for the copy), and
    # fall back to copying inline for good if anything else changes the state meanwhile.
    # True/False force it on/off.
    overlap_staging: bool | None = None
    verify_on_resume: bool = True
    # O_DIRECT for the tensor data where the file system allows it (falls back to buffered I/O)
    direct_io: bool = True
    # with the overlapped copy on: write parameters and optimizer state straight from the live
    # tensors until the next optimizer step, which copies only what is not on disk yet
    write_from_live: bool = True
    # direct-I/O batches the writer's I/O thread may hold while the next is gathered (0: written
    # inline, the writer before the I/O thread)
    io_queue: int = QUEUED
    # where the data file's checksum is computed: False, checksum threads beside the write (pieces
    # of a CRC, which combine, on several; the one in-order XXH3 stream on one); True, one
    # in-order digest updated by the writer's I/O thread right after each batch is written (fewer
    # runnable threads, but the disk waits while the I/O thread hashes: measured slower on a
    # 2-core machine, a 1.2 GB commit with xxh3-128 in 0.47 s against 0.41 at load ~2 and 0.57
    # against 0.47 at load ~10, benchmarks/checkpoint.py)
    checksum_on_io: bool = False
    # sync a save's files (data, .metadata, extras) together, in one journal commit, rather than
    # each as it is closed
    group_fsync: bool = True
    preempt: PreemptionWatcher = field(default_factory=NoPreemption)
    seed: int = 0
    storage_options: dict[str, Any] | None = None
    group_timeout_s: float = 600.0
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    # peer-memory tier: Redis URLs, one per node; None reads MODELPLANE_PEER_MEMORY_URLS, [] turns it off
    peer_memory_urls: list[str] | None = None
    peer_namespace: str | None = None

    def __post_init__(self) -> None:
        require_torch()
        if self.keep_last < 1:
            raise CheckpointError(
                f"keep_last={self.keep_last} would delete every checkpoint",
                field="keep_last",
                hint="keep at least 1 (2 or more leaves a fallback if the newest is corrupt)",
            )
        if self.io_queue < 0:
            raise CheckpointError(
                f"io_queue={self.io_queue} is negative",
                field="io_queue",
                hint="use 0 to write inline, or the number of batches the I/O thread may hold (default 2)",
            )
        if self.checksum == "auto":
            self.checksum = default_algorithm()
        try:
            check_algorithm(self.checksum)
        except CorruptCheckpoint as exc:
            raise CheckpointError(
                f"checksum={self.checksum!r} cannot be used: {exc}",
                field="checksum",
                hint=f"use 'auto' or one of {sorted(CHECKSUMS)} (with its package installed)",
            ) from None
        self.store = Store(self.url, self.storage_options)
        self._dist = self._init_dist()
        self._model: Any = None
        self._optimizer: Any = None
        self._stateful: dict[str, Stateful] = {}
        self._overlap_fallback = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelplane-ckpt")
        self._pending: Future[SaveRecord] | None = None
        self._host = HostSnapshot()  # the reused host buffer of asynchronous saves
        self._state_cache: tuple[Any, dict[str, Any]] | None = None
        # (fence, record, needed by wait) while a snapshot copies beside training or the write
        # still reads the live tensors
        self._staging: Any = None
        self._hooked = False
        self._reseeding: Future[None] | None = None
        self.reseeded: list[int] = []  # saved ranks whose files this rank put back into peer memory
        self.saves: list[SaveRecord] = []
        self.skipped: list[CorruptCheckpoint] = []
        self.resumed_step: int | None = None
        self.last_resume_tier: str | None = None  # "memory" or "durable" after a successful resume
        self.memory_skipped: list[str] = []  # why a peer-memory copy was not used
        urls = urls_from_env() if self.peer_memory_urls is None else list(self.peer_memory_urls)
        self.peer: PeerMemoryTier | None = (
            PeerMemoryTier(urls, self.peer_namespace or namespace_for(self.store.url)) if urls else None
        )

    # ------------------------------------------------------------------ setup

    def _init_dist(self) -> _Dist:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return _Dist()
        timeout = timedelta(seconds=self.group_timeout_s)
        return _Dist(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            ckpt_group=dist.new_group(backend="gloo", timeout=timeout),
            ctl_group=dist.new_group(backend="gloo", timeout=timeout),
        )

    @property
    def rank(self) -> int:
        return self._dist.rank

    @property
    def world_size(self) -> int:
        return self._dist.world_size

    def track(self, *, model: Any = None, optimizer: Any = None, **stateful: Stateful) -> CheckpointManager:
        """Register what to checkpoint. Model and optimizer go through DCP (sharded tensors);
        every other object with ``state_dict``/``load_state_dict`` (LR scheduler, data sampler)
        is saved per rank beside them."""
        if model is not None:
            self._model = model
        if optimizer is not None:
            if self._model is None:
                raise CheckpointError(
                    "an optimizer needs its model", field="optimizer", hint="track(model=..., optimizer=...)"
                )
            self._optimizer = optimizer
        for name, obj in stateful.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise CheckpointError(
                    f"{name!r} has no state_dict()/load_state_dict()",
                    field=name,
                    hint="wrap it in an object with both methods",
                )
            self._stateful[name] = obj
        return self

    # ------------------------------------------------------------------ state dicts

    def _tensor_state(self) -> dict[str, Any]:
        """Model and optimizer state dicts with fully qualified names (DCP's ``get_state_dict``).

        ``get_state_dict`` costs tens of milliseconds per call (it re-derives every parameter's
        name), a sizeable part of a blocking window of ~100 ms: its result is kept and reused while
        :meth:`_state_key` shows it still references the live tensors; only the optimizer's
        hyperparameters (the learning rate moves every step) are re-read."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

        if self._model is None:
            return {}
        key = self._state_key()
        cached = self._state_cache
        if key is not None and cached is not None and cached[0] == key:
            state: dict[str, Any] = dict(cached[1])
            if "optim" in state:
                groups = [
                    {**{k: v for k, v in live.items() if k != "params"}, "params": old["params"]}
                    for old, live in zip(
                        state["optim"]["param_groups"], self._optimizer.param_groups, strict=True
                    )
                ]
                state["optim"] = {"state": state["optim"]["state"], "param_groups": groups}
            return state
        if self._optimizer is None:
            state = {"model": get_model_state_dict(self._model)}
        else:
            model_sd, optim_sd = get_state_dict(self._model, self._optimizer)
            state = {"model": model_sd, "optim": optim_sd}
        key = self._state_key()  # after: get_state_dict may have created the optimizer's state
        self._state_cache = (key, state) if key is not None else None
        return state

    def _state_key(self) -> tuple[Any, ...] | None:
        """What the cached state dict depends on: address, dtype, shape and device of every model
        and optimizer-state tensor, the identity of every parameter the optimizer holds, and the
        value of every non-tensor optimizer state entry. None (no caching) for a model whose state
        dict holds non-tensor entries."""
        import torch

        parts: list[Any] = []
        for name, v in self._model.state_dict(keep_vars=True).items():
            if not isinstance(v, torch.Tensor):
                return None
            parts.append((name, v.data_ptr(), v.dtype, tuple(v.shape), v.device))
        if self._optimizer is not None:
            for group in self._optimizer.param_groups:
                parts.append(len(group["params"]))
                for p in group["params"]:
                    parts.append(id(p))
                    for k, v in self._optimizer.state.get(p, {}).items():
                        if isinstance(v, torch.Tensor):
                            parts.append((k, v.data_ptr(), v.dtype, tuple(v.shape), v.device))
                        else:
                            parts.append((k, v))
        return tuple(parts)

    def _set_tensor_state(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

        if self._model is None:
            return
        if self._optimizer is None:
            set_model_state_dict(self._model, state["model"])
        else:
            set_state_dict(
                self._model, self._optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
            )

    def _extras_bytes(self, step: int) -> bytes:
        import torch

        body = {
            "step": step,
            "rank": self.rank,
            "world_size": self.world_size,
            "rng": rng.capture(),
            "app": {name: obj.state_dict() for name, obj in self._stateful.items()},
        }
        buf = io.BytesIO()
        torch.save(body, buf)
        return buf.getvalue()

    def _writer(
        self, rel: str, regions: list[tuple[int, int]] | None = None, ready: Any = None, guard: Any = None
    ) -> Any:
        return raw_writer(
            self.store.full(rel),
            local=self.store.local,
            algorithm=self.checksum,
            fsync=self.fsync,
            regions=regions or [],
            ready=ready,
            guard=guard,
            direct_io=self.direct_io,
            queued=self.io_queue,
            sum_on_io=self.checksum_on_io,
            defer_sync=self.group_fsync,
            storage_options=self.storage_options,
        )

    def _reader(self, rel: str, store: Store | None = None) -> Any:
        store = store or self.store
        return raw_reader(store.full(rel), local=store.local, storage_options=self.storage_options)

    def _dcp_save(self, state: dict[str, Any], writer: Any) -> Any:
        """DCP's save; its failure as a CheckpointError. Why: DCP raises CheckpointException, a
        BaseException, which ``except Exception`` around the background write let through, so
        a failed write skipped this rank's commit vote."""
        from torch.distributed.checkpoint import state_dict_saver as dcp
        from torch.distributed.checkpoint.api import CheckpointException

        try:
            return dcp.save(
                state,
                storage_writer=writer,
                process_group=self._dist.ckpt_group,
                no_dist=not self._dist.enabled,
            )
        except CheckpointException as exc:
            causes = "; ".join(f"rank {r}: {pair[0]!r}" for r, pair in sorted(exc.failures.items()))
            raise CheckpointError(f"writing the tensor data failed: {causes}", field="checkpoint") from exc

    # ------------------------------------------------------------------ save

    def save(self, step: int, *, blocking: bool | None = None) -> SaveRecord:
        """Checkpoint the tracked state as of ``step`` completed steps.

        Asynchronous unless ``blocking`` (or the manager was built synchronous): returns after the
        host snapshot; :meth:`wait` returns once the checkpoint is committed. Collective.
        """
        self.wait()
        synchronous = (not self.asynchronous) if blocking is None else blocking
        rel = step_dir(step)
        t0 = self.clock()
        tensors = self._tensor_state()
        extras = self._extras_bytes(step)
        record = SaveRecord(step, self.store.full(rel), not synchronous, blocking_s=0.0)
        if synchronous:  # written straight from the live tensors: no snapshot needed
            writer = self._writer(rel)
            metadata = self._dcp_save(tensors, writer)
            self._commit(record, metadata, extras, t0, writer)
            record.blocking_s = self.clock() - t0
            self._raise_if_failed(record)
        else:
            self._snapshot_and_write(record, tensors, extras, t0)
            record.blocking_s = self.clock() - t0
        self.saves.append(record)
        self.policy.record_save(step, self.clock(), record.blocking_s)
        return record

    def _snapshot_and_write(
        self, record: SaveRecord, tensors: dict[str, Any], extras: bytes, t0: float
    ) -> None:
        """Copy the state into the reused host buffer and hand the write to the background thread.

        The write starts first and streams each part of the buffer as soon as the copy has filled
        it (:class:`Progress`), so the commit comes about when the longer of copy and write ends,
        not after both; training waits only for the copy.

        With ``overlap_staging`` only the model's buffers are copied here (a forward pass may
        change them in place: BatchNorm's running statistics); parameters and optimizer state,
        which only the optimizer step changes, are copied in the background beside the next
        forward and backward, and the tracked optimizer's step waits for that copy (a step
        pre-hook). Code that changes parameters in place outside the optimizer step must leave
        it off.

        With ``write_from_live`` (the default) those tensors are not copied at all unless the
        optimizer step comes before the write has read them: the write streams them from the
        live tensors and the step's pre-hook copies only the rest (:class:`LiveSource`)."""
        try:
            prepared = self._host.prepare(tensors)
        except Unsupported:  # DTensor / ShardedTensor state (FSDP): DCP's own CPU copy
            from torch.distributed._state_dict_utils import _copy_state_dict, _create_cpu_state_dict

            staged = _copy_state_dict(tensors, _create_cpu_state_dict(tensors))
            self._pending = self._executor.submit(
                self._finish_async, record, staged, None, None, extras, t0, None
            )
            return
        if not (self._overlapping() and self._optimizer is not None):
            progress = Progress()
            self._pending = self._executor.submit(
                self._finish_async, record, prepared.state, None, progress, extras, t0, None
            )
            HostSnapshot.copy(prepared, progress=progress)
            return
        buffers = {int(b.data_ptr()) for b in self._model.buffers()}
        now = [i for i, t in enumerate(prepared.sources) if int(t.data_ptr()) in buffers]
        later = [i for i, t in enumerate(prepared.sources) if int(t.data_ptr()) not in buffers]
        HostSnapshot.copy(prepared, now)
        # in-place changes bump a tensor's version: one between now and the end of its copy means
        # the copy is not the state at this step, and the save fails rather than commit it
        versions = [prepared.sources[i]._version for i in later]
        if self.write_from_live and LiveSource.usable(prepared, later):
            live = LiveSource(prepared, later, versions)

            def fence_live() -> None:
                live.fence()
                record.staged_bytes = live.staged_bytes

            self._staging = (fence_live, record, False)
            self._install_staging_hook()
            staged = prepared.mixed(later)
            self._pending = self._executor.submit(
                self._finish_async, record, staged, None, None, extras, t0, live
            )
            return
        copied: Future[None] = Future()
        self._staging = (lambda: wait_futures([copied]), record, True)
        self._install_staging_hook()
        rest = (prepared, later, versions, copied)
        self._pending = self._executor.submit(
            self._finish_async, record, prepared.state, rest, None, extras, t0, None
        )

    def _overlapping(self) -> bool:
        return bool(self.overlap_staging) if self.overlap_staging is not None else not self._overlap_fallback

    def _install_staging_hook(self) -> None:
        if self._hooked or self._optimizer is None:
            return
        self._optimizer.register_step_pre_hook(lambda *_: self._await_staging())
        self._hooked = True

    def _await_staging(self) -> None:
        """Block until the snapshot is complete; the wait counts as blocking time of that save."""
        if self._staging is None:
            return
        fence, record, _ = self._staging
        self._staging = None
        t0 = self.clock()
        fence()  # a failed copy surfaces as the save's error, not in training
        record.blocking_s += self.clock() - t0

    def _finish_async(
        self,
        record: SaveRecord,
        staged: Any,
        rest: Any,
        progress: Progress | None,
        extras: bytes,
        t0: float,
        live: LiveSource | None,
    ) -> SaveRecord:
        metadata = None
        writer = None
        try:
            if rest is not None:
                prepared, later, versions, fence = rest
                try:
                    HostSnapshot.copy(prepared, later)
                finally:
                    fence.set_result(None)
                changed = [
                    i for i, v in zip(later, versions, strict=True) if prepared.sources[i]._version != v
                ]
                self._refuse_changed(record, len(changed))
            writer = self._writer(
                step_dir(record.step),
                self._host.regions,
                None if progress is None else progress.wait_for,
                live,
            )
            try:
                metadata = self._dcp_save(staged, writer)
            finally:
                if live is not None:
                    live.finish()
            if live is not None:
                self._refuse_changed(record, len(live.changed))
                if live.error:
                    raise CheckpointError(live.error, field="checkpoint")
        except Exception as exc:  # the tensor write failed on this rank; still join the commit vote
            record.error = f"rank {self.rank}: tensor write failed: {exc!r}"
        self._commit(record, metadata, extras, t0, writer)
        return record

    def _refuse_changed(self, record: SaveRecord, changed: int) -> None:
        """Fail the save when tensors changed in place (outside the optimizer step) before the
        overlapped copy or the live write had read them: the checkpoint would mix two steps."""
        if not changed:
            return
        if self.overlap_staging is None:
            self._overlap_fallback = True  # automatic mode: copy inline from the next save on
            log.warning(
                "overlapped snapshot of step %d saw %d tensor(s) change outside the optimizer step; "
                "this save is dropped and later saves copy inline",
                record.step,
                changed,
            )
        raise CheckpointError(
            f"{changed} tensor(s) changed in place while the overlapped snapshot copied them",
            field="overlap_staging",
            hint="something other than the tracked optimizer's step updates parameters or "
            "optimizer state; use overlap_staging=False for this job",
        )

    def _commit(
        self, record: SaveRecord, metadata: Any, extras: bytes, t0: float, writer: Any = None
    ) -> None:
        """Write this rank's extras, collect the checksums of the files it wrote, and let rank 0
        write the manifest only if every rank succeeded. Runs on the checkpoint group (in the
        background thread for asynchronous saves).

        The data file's checksum was computed by the writer in the same pass as the write, so it
        is never read back (unless the peer tier needs its bytes); only ``.metadata`` is read."""
        import torch.distributed as dist

        rel = step_dir(record.step)
        entries: dict[str, FileEntry] = {}
        known: dict[str, tuple[int, str]] = dict(getattr(writer, "digests", {}) or {})
        # with the peer tier on, this rank's files are kept in memory to mirror them
        payload: dict[str, bytes] | None = {} if self.peer is not None else None
        error = record.error
        if error is None:
            try:
                name = extras_name(self.rank)
                deferred = [str(p) for p in getattr(writer, "to_sync", None) or []]
                together = bool(deferred) and self.store.local
                self.store.write_bytes(f"{rel}/{name}", extras, durable=self.fsync and not together)
                if together:  # this rank's files durable before its vote, in one journal commit
                    fsync_paths([*deferred, os.path.join(self.store.root, rel, name)])
                entries[name] = FileEntry(len(extras), digest_bytes(extras, self.checksum))
                if payload is not None:
                    payload[name] = extras
                for fname in self._files_of_rank(metadata, known):
                    if fname in known:
                        entries[fname] = FileEntry(*known[fname])
                        if payload is not None:
                            payload[fname] = self.store.read_bytes(f"{rel}/{fname}")
                        continue
                    data = self.store.read_bytes(f"{rel}/{fname}")
                    entries[fname] = FileEntry(len(data), digest_bytes(data, self.checksum))
                    if payload is not None:
                        payload[fname] = data
            except Exception as exc:
                error = f"rank {self.rank}: {exc!r}"
        parts: list[Any] = [(entries, error)]
        if self._dist.enabled:
            parts = [None] * self.world_size
            dist.all_gather_object(parts, (entries, error), group=self._dist.ckpt_group)
        errors = [e for _, e in parts if e]
        status: list[Any] = [None]
        if self.rank == 0:
            if errors:
                status = ["; ".join(errors)]
            else:
                files: dict[str, FileEntry] = {}
                for part, _ in parts:
                    files.update(part)
                manifest = Manifest(
                    step=record.step,
                    world_size=self.world_size,
                    algorithm=self.checksum,
                    files=files,
                    created_unix=self.wall_clock(),
                )
                try:
                    manifest_bytes = manifest.to_json()
                    self.store.write_bytes(
                        f"{rel}/{MANIFEST_NAME}", manifest_bytes, atomic=True, durable=self.fsync
                    )
                    if payload is not None:
                        payload[MANIFEST_NAME] = manifest_bytes
                except Exception as exc:
                    status = [f"rank 0: manifest write failed: {exc!r}"]
                record.bytes_written = sum(e.size for e in files.values())
        if self._dist.enabled:
            dist.broadcast_object_list(status, src=0, group=self._dist.ckpt_group)
        record.error = status[0]
        record.total_s = self.clock() - t0  # committed: the manifest is durable
        if record.error:
            log.error("checkpoint %s not committed: %s", record.path, record.error)
            return
        if self.rank == 0:
            try:  # housekeeping after the commit: a failure here loses nothing
                self._apply_retention(record.step)
            except Exception as exc:
                log.warning("retention after step %d failed: %r", record.step, exc)
        if payload is not None:
            self._mirror(record, payload)

    def _mirror(self, record: SaveRecord, payload: dict[str, bytes]) -> None:
        """Copy this rank's files of a committed step to its peer's memory. A failure costs only
        the fast path of the next resume, never the (already durable) checkpoint."""
        assert self.peer is not None
        try:
            self.peer.put(self.rank, record.step, payload)
            record.mirrored = True
        except PeerMemoryError as exc:
            record.mirrored = False
            log.warning("%s (%s)", exc.message, exc.hint)

    def _files_of_rank(self, metadata: Any, written: Mapping[str, Any] | None = None) -> list[str]:
        """The DCP files this rank wrote (``__<rank>_*``), plus ``.metadata`` for rank 0.

        Some torch releases (2.11 on an H100 here) return the global metadata from ``dcp.save``
        before the writer's ``finish`` fills its ``storage_data``; the files this rank's own
        writer recorded (``written``) name the same data files then."""
        if metadata is None:
            return []
        storage = getattr(metadata, "storage_data", None)
        if storage:
            names = {info.relative_path for info in storage.values()}
        else:
            names = set(written or ())
        mine = []
        for name in sorted(names):
            m = _SHARD_OWNER.match(name)
            owner = int(m.group(1)) if m else 0
            if owner == self.rank:
                mine.append(name)
        if self.rank == 0:
            mine.append(".metadata")
        return mine

    def _apply_retention(self, newest: int) -> None:
        """Keep the newest ``keep_last`` committed checkpoints; drop older ones and leftovers of
        saves that never committed. The manifest goes first so a half-deleted folder is never
        mistaken for a complete checkpoint."""
        complete: list[int] = []
        incomplete: list[int] = []
        for step in self._listed_steps():
            (complete if self.store.exists(f"{step_dir(step)}/{MANIFEST_NAME}") else incomplete).append(step)
        for step in sorted(complete)[: -self.keep_last]:
            self.store.remove(f"{step_dir(step)}/{MANIFEST_NAME}")
            self.store.remove(step_dir(step))
        for step in incomplete:
            if step < newest:
                self.store.remove(step_dir(step))

    def wait(self) -> SaveRecord | None:
        """Block until the in-flight save is committed (or failed); raise if it failed. Also
        waits for a peer re-seed after resume (whose failure is only logged). A save written from
        the live tensors is not fenced here: training is not running, so the write reads on."""
        if self._staging is not None and self._staging[2]:
            self._await_staging()
        if self._reseeding is not None:
            reseeding, self._reseeding = self._reseeding, None
            wait_futures([reseeding])
        if self._pending is None:
            return None
        pending, self._pending = self._pending, None
        record = pending.result()
        self._staging = None  # written: nothing left to fence
        self._raise_if_failed(record)
        return record

    @staticmethod
    def _raise_if_failed(record: SaveRecord) -> None:
        if record.error:
            raise CheckpointError(
                f"checkpoint {record.path} was not committed: {record.error}",
                field="checkpoint",
                hint="check free space and write access of the checkpoint URL; the previous checkpoint is intact",
            )

    # ------------------------------------------------------------------ step boundary

    def maybe_save(self, step: int) -> StepDecision:
        """Call after each optimizer step. Saves when the policy says so on any rank, and on a
        preemption notice on any rank (then synchronously, and asks the loop to stop). Collective."""
        import torch
        import torch.distributed as dist

        reason = self.policy.due(step, self.clock())
        preempted = self.preempt.should_preempt()
        if self._dist.enabled:
            flags = torch.tensor([int(reason is not None), int(preempted)], dtype=torch.int32)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self._dist.ctl_group)
            if reason is None and flags[0]:
                reason = "peer"
            preempted = bool(flags[1])
        if preempted:
            if self.policy.last_save_step == step:
                self.wait()  # this step is already being saved: make sure it commits
            else:
                self.save(step, blocking=True)
            return StepDecision(saved=True, stop=True, reason="preempt")
        if reason is not None:
            self.save(step)
            return StepDecision(saved=True, reason=reason)
        return StepDecision(saved=False)

    # ------------------------------------------------------------------ resume

    def _listed_steps(self) -> list[int]:
        steps = []
        for name in self.store.listdir():
            m = _STEP_DIR.match(name)
            if m:
                steps.append(int(m.group(1)))
        return sorted(steps)

    def _agreed(self, value: Any) -> Any:
        """Rank 0's value on every rank (listings of eventually consistent stores may differ)."""
        if not self._dist.enabled:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, group=self._dist.ckpt_group)
        return box[0]

    def complete_steps(self) -> list[int]:
        """Steps with a manifest, oldest first (not verified against checksums)."""
        return [s for s in self._listed_steps() if self.store.exists(f"{step_dir(s)}/{MANIFEST_NAME}")]

    def read_manifest(self, step: int) -> Manifest:
        where = self.store.full(f"{step_dir(step)}/{MANIFEST_NAME}")
        if not self.store.exists(f"{step_dir(step)}/{MANIFEST_NAME}"):
            raise CorruptCheckpoint(
                f"checkpoint {self.store.full(step_dir(step))} has no {MANIFEST_NAME}: its save never finished",
                path=where,
                hint="it is ignored; resume uses the previous complete checkpoint",
            )
        return Manifest.from_json(self.store.read_bytes(f"{step_dir(step)}/{MANIFEST_NAME}"), where=where)

    def verify(self, step: int) -> Manifest:
        """Check every file's size and checksum; ranks split the files. Collective.

        Raises :class:`CorruptCheckpoint` naming the first bad file (the same on every rank).
        """
        problems: list[str] = []
        manifest: Manifest | None = None
        try:
            manifest = self.read_manifest(step)
        except CorruptCheckpoint as exc:
            problems.append(f"{exc.path}\t{exc.message}")
        if manifest is not None:
            for i, (name, entry) in enumerate(sorted(manifest.files.items())):
                if i % self.world_size != self.rank:
                    continue
                rel = f"{step_dir(step)}/{name}"
                where = self.store.full(rel)
                if not self.store.exists(rel):
                    problems.append(f"{where}\tfile {where} listed in the manifest is missing")
                    continue
                size = self.store.size(rel)
                if size != entry.size:
                    problems.append(
                        f"{where}\tfile {where} is {size} bytes, the manifest says {entry.size} (truncated?)"
                    )
                    continue
                if self.verify_on_resume:
                    with self.store.open_read(rel) as fh:
                        digest, _ = digest_stream(fh, manifest.algorithm)
                    if digest != entry.checksum:
                        problems.append(f"{where}\tfile {where} fails its {manifest.algorithm} checksum")
        if self._dist.enabled:
            import torch.distributed as dist

            everyone: list[Any] = [None] * self.world_size
            dist.all_gather_object(everyone, problems, group=self._dist.ckpt_group)
            problems = [p for part in everyone for p in part]
        if problems:
            path, message = sorted(set(problems))[0].split("\t", 1)
            raise CorruptCheckpoint(
                f"corrupt checkpoint at step {step}: {message}",
                path=path,
                hint="it is skipped in favour of the previous complete checkpoint",
            )
        assert manifest is not None
        return manifest

    def resume(self, step: int | None = None) -> int | None:
        """Restore the newest complete, verified checkpoint (or exactly ``step``).

        Returns the restored step count, or None when there is nothing to resume from. Corrupt or
        unfinished checkpoints are logged, recorded in ``skipped`` and passed over. Collective.
        """
        self.wait()
        self.last_resume_tier = None
        if self.peer is not None:
            from_memory = self._resume_from_memory(step)
            if from_memory is not None:
                return from_memory
        candidates = [step] if step is not None else sorted(self._agreed(self._listed_steps()), reverse=True)
        for candidate in candidates:
            try:
                manifest = self.verify(candidate)
            except CorruptCheckpoint as exc:
                if step is not None:
                    raise
                log.error("%s (%s)", exc.message, exc.hint)
                self.skipped.append(exc)
                continue
            self._load(candidate, manifest)
            self._resumed(candidate, "durable")
            self._reseed_peers(candidate, manifest)
            return candidate
        if step is not None:
            raise NoCheckpoint(f"no checkpoint at step {step} under {self.url}", field="step")
        return None

    def _reseed_peers(self, step: int, manifest: Manifest) -> None:
        """After a resume from the durable tier, put the checkpoint just loaded back into peer
        memory under the current placement's stores, so the next failure again recovers from
        memory. Needed after a migration: the copy lived in the old nodes' Redis, which the new
        placement does not list (or lists empty). Rank r's files go to r's peer, as a save would
        put them; when the world size changed, the ranks of the saved job are split over the
        current ranks. Runs in the background thread (training starts at once); the next save
        waits for it, so an older step never overwrites a newer one."""
        if self.peer is None:
            return
        mine = [r for r in range(manifest.world_size) if r % self.world_size == self.rank]
        self._reseeding = self._executor.submit(self._reseed, step, manifest, mine)

    def _reseed(self, step: int, manifest: Manifest, saved_ranks: list[int]) -> None:
        assert self.peer is not None
        rel = step_dir(step)
        for r in saved_ranks:
            try:
                files = {n: self.store.read_bytes(f"{rel}/{n}") for n in saved_files_of_rank(manifest, r)}
                if r == 0:
                    files[MANIFEST_NAME] = self.store.read_bytes(f"{rel}/{MANIFEST_NAME}")
                self.peer.put(r, step, files)
                self.reseeded.append(r)
            except (PeerMemoryError, OSError) as exc:
                reason = f"re-seeding peer memory with step {step} of rank {r} failed: {exc}"
                log.warning("%s; the next resume reads the durable tier", reason)
                self.memory_skipped.append(reason)

    def _resumed(self, step: int, tier: str) -> None:
        self.resumed_step = step
        self.last_resume_tier = tier
        self.policy.last_save_step = step
        self.policy.last_save_time = None
        self.policy.start(self.clock(), step)
        log.info("resumed step %d from the %s tier", step, tier)

    def _memory_copy(self, durable: list[int]) -> tuple[int, Manifest, dict[str, bytes]] | None:
        """The newest step held in peer memory with every file present and matching its checksum
        (against the durable manifest when that step is durable too), or None with the reason
        logged and kept in ``memory_skipped``."""
        assert self.peer is not None
        try:
            head = self.peer.fetch(0)
            if head is None:
                return None
            where = f"{self.peer.peer_url(0)} step {head.step} {MANIFEST_NAME}"
            if head.step in durable:
                manifest = self.read_manifest(head.step)
            elif MANIFEST_NAME in head.files:
                manifest = Manifest.from_json(head.files[MANIFEST_NAME], where=where)
            else:
                raise CorruptCheckpoint(f"memory copy of step {head.step} has no {MANIFEST_NAME}", path=where)
            files = {n: b for n, b in head.files.items() if n != MANIFEST_NAME}
            for r in range(1, manifest.world_size):
                copy = self.peer.fetch(r)
                if copy is None or copy.step != head.step:
                    have = None if copy is None else copy.step
                    raise CorruptCheckpoint(
                        f"memory copy of rank {r} is at step {have}, not {head.step}",
                        path=self.peer.peer_url(r),
                    )
                files.update(copy.files)
            for name, entry in sorted(manifest.files.items()):
                data = files.get(name)
                if data is None:
                    raise CorruptCheckpoint(f"memory copy of step {head.step} lacks {name}", path=name)
                if len(data) != entry.size or digest_bytes(data, manifest.algorithm) != entry.checksum:
                    raise CorruptCheckpoint(
                        f"memory copy of {name} at step {head.step} fails its {manifest.algorithm} checksum",
                        path=name,
                    )
            return head.step, manifest, files
        except (PeerMemoryError, CorruptCheckpoint) as exc:
            reason = f"peer-memory tier not used: {exc.message}"
            log.warning("%s; reading the durable tier", reason)
            self.memory_skipped.append(reason)
            return None

    def _resume_from_memory(self, step: int | None) -> int | None:
        """Restore from peer memory when its copy is verified and at least as new as the newest
        complete durable checkpoint (every rank must agree); None sends resume to the durable tier."""
        durable = self._agreed(self.complete_steps())
        found = self._memory_copy(durable)
        mine = found[0] if found is not None else None
        if self._dist.enabled:
            import torch.distributed as dist

            everyone: list[Any] = [None] * self.world_size
            dist.all_gather_object(everyone, mine, group=self._dist.ckpt_group)
            if len(set(everyone)) != 1:
                mine = None
        if found is None or mine is None:
            return None
        mem_step, manifest, files = found
        if (step is not None and mem_step != step) or (step is None and durable and mem_step < max(durable)):
            self.memory_skipped.append(
                f"memory copy is at step {mem_step}, durable newest is {max(durable or [0])}"
            )
            return None
        shm = "/dev/shm"
        base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
        with tempfile.TemporaryDirectory(prefix="modelplane-peer-", dir=base) as tmp:
            folder = os.path.join(tmp, step_dir(mem_step))
            os.makedirs(folder)
            for name, data in files.items():
                with open(os.path.join(folder, name), "wb") as fh:
                    fh.write(data)
            self._load(mem_step, manifest, Store(tmp))
        self._resumed(mem_step, "memory")
        return mem_step

    def _load(self, step: int, manifest: Manifest, source: Store | None = None) -> None:
        import torch
        from torch.distributed.checkpoint import state_dict_loader as dcp

        rel = step_dir(step)
        store = source or self.store
        tensors = self._tensor_state()
        if tensors:
            dcp.load(
                tensors,
                storage_reader=self._reader(rel, store),
                process_group=self._dist.ckpt_group,
                no_dist=not self._dist.enabled,
            )
            self._set_tensor_state(tensors)
            self._state_cache = None  # set_state_dict may have replaced tensors
        own = self.rank < manifest.world_size
        extras = extras_name(self.rank if own else 0)
        body = torch.load(io.BytesIO(store.read_bytes(f"{rel}/{extras}")), weights_only=False)
        for name, obj in self._stateful.items():
            if name not in body["app"]:
                raise CheckpointError(
                    f"checkpoint {store.full(rel)} has no state for {name!r}",
                    field=name,
                    hint=f"it holds {sorted(body['app'])}; track the same objects as the run that saved it",
                )
            obj.load_state_dict(body["app"][name])
        if own:
            rng.restore(body["rng"])
        else:  # the job grew: this rank has no saved streams, give it fresh distinct ones
            rng.reseed(self.seed + step, self.rank)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Finish the in-flight save and release the staging buffers."""
        try:
            self.wait()
        finally:
            self._executor.shutdown(wait=True)
            if self.peer is not None:
                self.peer.close()
            self._host.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
