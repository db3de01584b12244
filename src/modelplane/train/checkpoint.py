"""Sharded, asynchronous, atomically committed checkpoints on torch.distributed.checkpoint (DCP).

Layout under the root URL::

    step-000000001200/
        __0_0.distcp, __1_0.distcp, ...   tensors, each rank writes its part (DCP)
        .metadata                          DCP's index of the tensors
        extras-rank00000.pt ...            per-rank small state: RNG, scheduler, data position
        MANIFEST.json                      written last, by rank 0: files, sizes, checksums

Why this shape:
- DCP already shards, de-duplicates replicated data-parallel tensors across ranks for writing,
  and reshards on load, so a checkpoint from 4 ranks loads on 2 or 8.
- The blocking window of an asynchronous save is the copy of the tensors to host memory (DCP's
  stager, reusing its buffers from one save to the next); the write, the checksums and the commit
  run in a background thread on a process group of their own (a save on the training group
  deadlocked DDP here; torchtitan also keeps a separate group).
- Per-step agreement (save now? preempted?) runs on a third small group from the training thread,
  so the two never interleave collectives on one group.
- The manifest is the commit: a folder without one does not exist for resume; a file that does
  not match its checksum makes the checkpoint corrupt, reported by name, and resume falls back to
  the previous complete one.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from modelplane.train import rng
from modelplane.train.errors import CheckpointError, CorruptCheckpoint, NoCheckpoint, require_torch
from modelplane.train.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    default_algorithm,
    digest_bytes,
    digest_stream,
)
from modelplane.train.peer_memory import PeerMemoryError, PeerMemoryTier, namespace_for, urls_from_env
from modelplane.train.policy import SavePolicy
from modelplane.train.preempt import NoPreemption, PreemptionWatcher
from modelplane.train.storage import Store

log = logging.getLogger("modelplane.train.checkpoint")

_STEP_DIR = re.compile(r"^step-(\d{12})$")
_SHARD_OWNER = re.compile(r"^__(\d+)_")


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def step_dir(step: int) -> str:
    return f"step-{step:012d}"


def extras_name(rank: int) -> str:
    return f"extras-rank{rank:05d}.pt"


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
    overlap_staging: bool = False
    verify_on_resume: bool = True
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
        if self.checksum == "auto":
            self.checksum = default_algorithm()
        self.store = Store(self.url, self.storage_options)
        self._dist = self._init_dist()
        self._model: Any = None
        self._optimizer: Any = None
        self._stateful: dict[str, Stateful] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelplane-ckpt")
        self._pending: Future[SaveRecord] | None = None
        self._stager: Any = None
        self._staging: Any = None  # (future, record) while a snapshot copies beside training
        self._hooked = False
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
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

        if self._model is None:
            return {}
        if self._optimizer is None:
            return {"model": get_model_state_dict(self._model)}
        model_sd, optim_sd = get_state_dict(self._model, self._optimizer)
        return {"model": model_sd, "optim": optim_sd}

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

    def _get_stager(self) -> Any:
        """One stager for the whole run: DCP keeps its host buffers between saves, so after the
        first save the blocking window is a memcpy, not an allocation.

        With ``overlap_staging`` the copy runs in a thread while the next forward and backward
        run; the tracked optimizer's step waits for it (a step pre-hook), because the step is
        the first thing that changes parameters. Buffers a forward pass mutates in place
        (BatchNorm running statistics) may then be captured one step late: leave it off for such
        models."""
        if self._stager is None:
            import torch
            from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

            cuda = torch.cuda.is_available()
            self._stager = DefaultStager(
                StagingOptions(
                    use_pinned_memory=cuda,
                    use_shared_memory=False,
                    # overlap needs the optimizer's step hook to fence the copy; without one, stage inline
                    use_async_staging=self.overlap_staging and self._optimizer is not None,
                    use_non_blocking_copy=cuda,
                )
            )
        return self._stager

    def _writer(self, rel: str) -> Any:
        if self.store.local:
            from torch.distributed.checkpoint.filesystem import FileSystemWriter

            return FileSystemWriter(self.store.full(rel), thread_count=1, sync_files=self.fsync)
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecWriter

        return FsspecWriter(self.store.full(rel), sync_files=self.fsync, **(self.storage_options or {}))

    def _reader(self, rel: str) -> Any:
        if self.store.local:
            from torch.distributed.checkpoint.filesystem import FileSystemReader

            return FileSystemReader(self.store.full(rel))
        from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader

        return FsspecReader(self.store.full(rel), **(self.storage_options or {}))

    # ------------------------------------------------------------------ save

    def save(self, step: int, *, blocking: bool | None = None) -> SaveRecord:
        """Checkpoint the tracked state as of ``step`` completed steps.

        Asynchronous unless ``blocking`` (or the manager was built synchronous): returns after the
        host snapshot; :meth:`wait` returns once the checkpoint is committed. Collective.
        """
        from torch.distributed.checkpoint import state_dict_saver as dcp

        self.wait()
        synchronous = (not self.asynchronous) if blocking is None else blocking
        rel = step_dir(step)
        t0 = self.clock()
        tensors = self._tensor_state()
        extras = self._extras_bytes(step)
        writer = self._writer(rel)
        if synchronous:
            metadata = dcp.save(
                tensors,
                storage_writer=writer,
                process_group=self._dist.ckpt_group,
                no_dist=not self._dist.enabled,
            )
            record = SaveRecord(step, self.store.full(rel), False, blocking_s=0.0)
            self._commit(record, metadata, extras, t0)
            record.blocking_s = self.clock() - t0
            self._raise_if_failed(record)
        else:
            upload: Any = dcp.async_save(
                tensors,
                storage_writer=writer,
                process_group=self._dist.ckpt_group,
                async_stager=self._get_stager(),
                no_dist=not self._dist.enabled,
            )
            record = SaveRecord(step, self.store.full(rel), True, blocking_s=0.0)
            if hasattr(upload, "upload_completion"):  # staging continues in DCP's thread
                self._staging = (upload.staging_completion, record)
                self._install_staging_hook()
                upload = upload.upload_completion
            record.blocking_s = self.clock() - t0
            self._pending = self._executor.submit(self._finish_async, record, upload, extras, t0)
        self.saves.append(record)
        self.policy.record_save(step, self.clock(), record.blocking_s)
        return record

    def _install_staging_hook(self) -> None:
        if self._hooked or self._optimizer is None:
            return
        self._optimizer.register_step_pre_hook(lambda *_: self._await_staging())
        self._hooked = True

    def _await_staging(self) -> None:
        """Block until the snapshot is complete; the wait counts as blocking time of that save."""
        if self._staging is None:
            return
        future, record = self._staging
        self._staging = None
        t0 = self.clock()
        future.result()
        record.blocking_s += self.clock() - t0

    def _finish_async(self, record: SaveRecord, upload: Any, extras: bytes, t0: float) -> SaveRecord:
        try:
            metadata = upload.result()
        except Exception as exc:  # the tensor write failed on this rank; still join the commit vote
            metadata = None
            record.error = f"rank {self.rank}: tensor write failed: {exc!r}"
        self._commit(record, metadata, extras, t0)
        return record

    def _commit(self, record: SaveRecord, metadata: Any, extras: bytes, t0: float) -> None:
        """Write this rank's extras, checksum the files it wrote, and let rank 0 write the manifest
        only if every rank succeeded. Runs on the checkpoint group (in the background thread for
        asynchronous saves)."""
        import torch.distributed as dist

        rel = step_dir(record.step)
        entries: dict[str, FileEntry] = {}
        # with the peer tier on, the bytes read for the checksum are kept to mirror them
        payload: dict[str, bytes] | None = {} if self.peer is not None else None
        error = record.error
        if error is None:
            try:
                name = extras_name(self.rank)
                self.store.write_bytes(f"{rel}/{name}", extras, durable=self.fsync)
                entries[name] = FileEntry(len(extras), digest_bytes(extras, self.checksum))
                if payload is not None:
                    payload[name] = extras
                for fname in self._files_of_rank(metadata):
                    if payload is not None:
                        data = self.store.read_bytes(f"{rel}/{fname}")
                        entries[fname] = FileEntry(len(data), digest_bytes(data, self.checksum))
                        payload[fname] = data
                        continue
                    with self.store.open_read(f"{rel}/{fname}") as fh:
                        digest, size = digest_stream(fh, self.checksum)
                    entries[fname] = FileEntry(size, digest)
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
                    self.store.write_bytes(f"{rel}/{MANIFEST_NAME}", manifest_bytes, atomic=True)
                    if payload is not None:
                        payload[MANIFEST_NAME] = manifest_bytes
                    self._apply_retention(record.step)
                except Exception as exc:
                    status = [f"rank 0: manifest write failed: {exc!r}"]
                record.bytes_written = sum(e.size for e in files.values())
        if self._dist.enabled:
            dist.broadcast_object_list(status, src=0, group=self._dist.ckpt_group)
        record.error = status[0]
        if record.error is None and payload is not None:
            self._mirror(record, payload)
        record.total_s = self.clock() - t0
        if record.error:
            log.error("checkpoint %s not committed: %s", record.path, record.error)

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

    def _files_of_rank(self, metadata: Any) -> list[str]:
        """The DCP files this rank wrote (``__<rank>_*``), plus ``.metadata`` for rank 0."""
        if metadata is None:
            return []
        names = {info.relative_path for info in metadata.storage_data.values()}
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
        """Block until the in-flight save is committed (or failed); raise if it failed."""
        self._await_staging()
        if self._pending is None:
            return None
        pending, self._pending = self._pending, None
        record = pending.result()
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
            return candidate
        if step is not None:
            raise NoCheckpoint(f"no checkpoint at step {step} under {self.url}", field="step")
        return None

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
            self.memory_skipped.append(f"memory copy is at step {mem_step}, durable newest is {max(durable or [0])}")
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
        from torch.distributed.checkpoint.filesystem import FileSystemReader

        rel = step_dir(step)
        store = source or self.store
        tensors = self._tensor_state()
        if tensors:
            dcp.load(
                tensors,
                storage_reader=self._reader(rel) if source is None else FileSystemReader(store.full(rel)),
                process_group=self._dist.ckpt_group,
                no_dist=not self._dist.enabled,
            )
            self._set_tensor_state(tensors)
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
            if self._stager is not None:
                self._stager.close()
                self._stager = None

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
