"""Single-process behaviour of the checkpoint manager: round trip, snapshot isolation, atomic
commit, retention, corruption fallback, fsspec URLs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from modelplane.train.checkpoint import CheckpointManager, step_dir
from modelplane.train.data_position import ResumableBatchSampler
from modelplane.train.errors import CheckpointError, CorruptCheckpoint
from modelplane.train.manifest import MANIFEST_NAME, Manifest, default_algorithm, digest_stream
from modelplane.train.policy import SavePolicy


def _job(
    seed: int = 0,
) -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, ResumableBatchSampler]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.2), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched, ResumableBatchSampler(64, global_batch_size=8, seed=1)


def _train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    sampler: ResumableBatchSampler,
    steps: int,
) -> None:
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(64, 6, generator=g), torch.randn(64, 1, generator=g)
    done = 0
    while done < steps:
        for idx in sampler:
            loss = nn.functional.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            sampler.advance()
            done += 1
            if done == steps:
                return


def _manager(tmp_path: Path, **kw: object) -> tuple[CheckpointManager, tuple]:
    job = _job()
    mgr = CheckpointManager(str(tmp_path / "ckpt"), **kw)  # type: ignore[arg-type]
    mgr.track(model=job[0], optimizer=job[1], scheduler=job[2], data=job[3])
    return mgr, job


@pytest.mark.parametrize("asynchronous", [True, False])
def test_resume_continues_exactly_where_it_stopped(tmp_path: Path, asynchronous: bool) -> None:
    ref = _job()
    _train(*ref, steps=10)

    mgr, job = _manager(tmp_path, asynchronous=asynchronous)
    _train(*job, steps=6)
    mgr.save(6)
    mgr.close()
    torch.manual_seed(999)  # a fresh process would start from another RNG state

    mgr2, job2 = _manager(tmp_path)
    assert mgr2.resume() == 6
    assert job2[3].state_dict()["consumed"] == 6 * 8
    _train(*job2, steps=4)
    for a, b in zip(ref[0].parameters(), job2[0].parameters(), strict=True):
        assert torch.equal(a, b)
    assert job2[2].state_dict() == ref[2].state_dict()
    mgr2.close()


def test_async_snapshot_is_isolated_from_later_updates(tmp_path: Path) -> None:
    """The inline snapshot: any change after save() returns, by any code, misses the checkpoint."""
    mgr, (model, *_rest) = _manager(tmp_path, overlap_staging=False)
    before = [p.detach().clone() for p in model.parameters()]
    record = mgr.save(1)
    assert record.asynchronous
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1000.0)  # training goes on while the write is in flight
    mgr.close()
    mgr2, (model2, *_r) = _manager(tmp_path)
    assert mgr2.resume() == 1
    for a, b in zip(before, model2.parameters(), strict=True):
        assert torch.equal(a, b)
    mgr2.close()


def test_manifest_lists_every_file_and_is_written_last(tmp_path: Path) -> None:
    mgr, _ = _manager(tmp_path)
    mgr.save(3)
    mgr.close()
    folder = tmp_path / "ckpt" / step_dir(3)
    manifest = mgr.read_manifest(3)
    on_disk = {p.name for p in folder.iterdir()} - {MANIFEST_NAME}
    assert set(manifest.files) == on_disk
    newest_data = max(os.stat(folder / n).st_mtime_ns for n in on_disk)
    assert os.stat(folder / MANIFEST_NAME).st_mtime_ns >= newest_data


def test_folder_without_manifest_is_ignored(tmp_path: Path) -> None:
    mgr, _ = _manager(tmp_path)
    mgr.save(2)
    mgr.save(4)
    mgr.close()
    (tmp_path / "ckpt" / step_dir(4) / MANIFEST_NAME).unlink()  # as if killed before the commit
    mgr2, _j = _manager(tmp_path)
    assert mgr2.resume() == 2
    assert "never finished" in mgr2.skipped[0].message
    mgr2.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corrupt_newest_falls_back_and_names_the_file(tmp_path: Path, damage: str) -> None:
    mgr, _ = _manager(tmp_path)
    mgr.save(2)
    mgr.save(4)
    mgr.close()
    shard = tmp_path / "ckpt" / step_dir(4) / "__0_0.distcp"
    data = shard.read_bytes()
    if damage == "flip":
        shard.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "truncate":
        shard.write_bytes(data[: len(data) // 2])
    else:
        shard.unlink()
    mgr2, _j = _manager(tmp_path)
    assert mgr2.resume() == 2
    (err,) = mgr2.skipped
    assert err.path.endswith("__0_0.distcp")
    assert "__0_0.distcp" in str(err)
    with pytest.raises(CorruptCheckpoint, match=r"__0_0\.distcp"):
        mgr2.resume(step=4)
    mgr2.close()


def test_retention_keeps_last_n_complete(tmp_path: Path) -> None:
    mgr, _ = _manager(tmp_path, keep_last=2)
    (tmp_path / "ckpt" / step_dir(1)).mkdir(parents=True)  # leftover of a crashed save
    for step in (2, 4, 6, 8):
        mgr.save(step)
    mgr.close()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [step_dir(6), step_dir(8)]
    assert mgr.complete_steps() == [6, 8]


def test_nothing_to_resume_returns_none(tmp_path: Path) -> None:
    mgr, _ = _manager(tmp_path)
    assert mgr.resume() is None
    mgr.close()


def test_fsspec_url_round_trip(tmp_path: Path) -> None:
    """Any fsspec URL works through DCP's fsspec writer; memory:// stands in for s3:// here."""
    url = f"memory://modelplane-test-{os.getpid()}/ckpt"
    job = _job()
    mgr = CheckpointManager(url).track(model=job[0], optimizer=job[1], data=job[3])
    _train(*job, steps=3)
    mgr.save(3)
    mgr.close()
    job2 = _job(seed=1)
    mgr2 = CheckpointManager(url).track(model=job2[0], optimizer=job2[1], data=job2[3])
    assert mgr2.resume() == 3
    for a, b in zip(job[0].parameters(), job2[0].parameters(), strict=True):
        assert torch.equal(a, b)
    mgr2.close()


def test_step_policy_through_maybe_save(tmp_path: Path) -> None:
    mgr, _ = _manager(tmp_path, policy=SavePolicy(every_steps=3), keep_last=10)
    saved = [s for s in range(1, 10) if mgr.maybe_save(s).saved]
    mgr.close()
    assert saved == [3, 6, 9]
    assert mgr.complete_steps() == [3, 6, 9]


def test_bad_arguments_are_explained(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="keep_last"):
        CheckpointManager(str(tmp_path), keep_last=0)
    mgr = CheckpointManager(str(tmp_path))
    with pytest.raises(CheckpointError, match="state_dict"):
        mgr.track(data=object())  # type: ignore[arg-type]
    mgr.close()


def test_resume_refuses_state_the_checkpoint_lacks(tmp_path: Path) -> None:
    mgr, _ = _manager(tmp_path)
    mgr.save(1)
    mgr.close()
    _m, _o, _s, sampler = _job()
    other = CheckpointManager(str(tmp_path / "ckpt")).track(
        data=sampler, extra=ResumableBatchSampler(64, global_batch_size=8)
    )
    with pytest.raises(CheckpointError, match="'extra'"):
        other.resume()
    other.close()


def test_overlapped_staging_snapshot_is_taken_before_the_next_optimizer_step(tmp_path: Path) -> None:
    """With overlap_staging the copy runs beside forward/backward; the next optimizer step waits
    for it, so the checkpoint holds exactly the state at save time."""
    ref = _job()
    _train(*ref, steps=4)
    mgr, job = _manager(tmp_path, overlap_staging=True)
    _train(*job, steps=3)
    mgr.save(3)
    _train(*job, steps=1)  # forward, backward, then the step pre-hook waits for the snapshot
    mgr.close()
    assert mgr.saves[0].blocking_s >= 0
    for a, b in zip(ref[0].parameters(), job[0].parameters(), strict=True):
        assert torch.equal(a, b)  # training itself was not disturbed
    mgr2, job2 = _manager(tmp_path)
    assert mgr2.resume() == 3
    _train(*job2, steps=1)
    for a, b in zip(ref[0].parameters(), job2[0].parameters(), strict=True):
        assert torch.equal(a, b)
    mgr2.close()


def test_overlapped_snapshot_refuses_state_changed_outside_the_optimizer_step(tmp_path: Path) -> None:
    """A parameter changed in place while the overlapped copy runs would make the checkpoint a mix
    of two steps: the save fails instead of committing it, and the previous checkpoint stays."""
    import threading

    mgr, (model, *_rest) = _manager(tmp_path, overlap_staging=True)
    mgr.save(1)
    mgr.wait()
    gate = threading.Event()
    # hold the background thread before its copy so the change lands inside the overlap window
    mgr._executor.submit(gate.wait)
    record = mgr.save(2)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # not the optimizer's step: no fence
    gate.set()
    with pytest.raises(CheckpointError, match="changed in place"):
        mgr.wait()
    assert record.error and "changed in place" in record.error
    mgr.close()
    assert mgr.complete_steps() == [1]


def test_by_default_the_copy_overlaps_and_falls_back_to_inline_after_an_outside_change(
    tmp_path: Path,
) -> None:
    """The default overlaps the host copy with the next forward/backward when an optimizer is
    tracked; a change outside the optimizer step drops that one save and later saves copy inline."""
    import threading

    mgr, (model, *_rest) = _manager(tmp_path)
    assert mgr.overlap_staging is None and mgr._overlapping()
    mgr.save(1)
    mgr.wait()
    gate = threading.Event()
    mgr._executor.submit(gate.wait)
    mgr.save(2)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    gate.set()
    with pytest.raises(CheckpointError, match="changed in place"):
        mgr.wait()
    assert not mgr._overlapping()  # from now on: inline copies
    expected = [p.detach().clone() for p in model.parameters()]
    mgr.save(3)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # after an inline copy this no longer matters
    mgr.close()
    assert mgr.complete_steps() == [1, 3]
    mgr2, (model2, *_r) = _manager(tmp_path)
    assert mgr2.resume() == 3
    for a, b in zip(expected, model2.parameters(), strict=True):
        assert torch.equal(a, b)
    mgr2.close()


class _Odd(nn.Module):
    """Tensors the raw format must round-trip: bf16, int64, 0-d, empty, non-contiguous."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w16 = nn.Parameter(torch.randn(5, 7, generator=g).to(torch.bfloat16))
        self.register_buffer("counts", torch.randint(0, 1000, (3, 3), generator=g))
        self.register_buffer("scalar", torch.tensor(float(seed)))
        self.register_buffer("empty", torch.zeros(0, 4))
        self.register_buffer("flags", torch.rand(6, generator=g) > 0.5)
        self.register_buffer("transposed", torch.randn(4, 3, generator=g).t())  # non-contiguous


@pytest.mark.parametrize(("asynchronous", "direct_io"), [(True, True), (False, True), (True, False)])
def test_raw_format_round_trips_dtypes_and_shapes(
    tmp_path: Path, asynchronous: bool, direct_io: bool
) -> None:
    """Direct I/O from the snapshot, through bounce buffers (synchronous), and buffered; resume
    verifies the checksum the writer computed in the same pass against the bytes on disk."""
    src, dst = _Odd(1), _Odd(2)
    mgr = CheckpointManager(str(tmp_path / "ck"), asynchronous=asynchronous, direct_io=direct_io).track(
        model=src
    )
    mgr.save(1)
    mgr.close()
    mgr2 = CheckpointManager(str(tmp_path / "ck")).track(model=dst)
    assert mgr2.resume() == 1
    mgr2.close()
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name


def test_reader_loads_checkpoints_in_dcps_own_encoding(tmp_path: Path) -> None:
    """Checkpoints written by DCP's stock FileSystemWriter (torch.save per tensor) still load."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.filesystem import FileSystemWriter

    from modelplane.train.storage import raw_reader

    model, _o, _s, _d = _job()
    dcp.save(
        {"model": model.state_dict()}, storage_writer=FileSystemWriter(str(tmp_path / "stock")), no_dist=True
    )
    other, _o2, _s2, _d2 = _job(seed=3)
    target = {"model": other.state_dict()}
    dcp.load(target, storage_reader=raw_reader(str(tmp_path / "stock"), local=True), no_dist=True)
    other.load_state_dict(target["model"])
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)


class _Large(nn.Module):
    """Tensors big enough to be written from their own memory (O_DIRECT), at addresses that are
    not 4 KiB aligned and with sizes that leave a tail, beside small ones that are gathered."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        backing = torch.randn(300_017, generator=g)
        self.shifted = nn.Parameter(backing[17:].clone()[3:])  # a view: 12 bytes past its allocation
        self.odd = nn.Parameter(torch.randn(1021, 257, generator=g))
        self.bias = nn.Parameter(torch.randn(33, generator=g))
        self.register_buffer("scale16", torch.randn(70_001, generator=g).to(torch.float16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.shifted[:257] * x).sum() + self.odd.sum() + self.bias.sum() + self.scale16.float().sum()


def _large_job(seed: int) -> tuple[_Large, torch.optim.Optimizer]:
    model = _Large(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    _step(model, opt)
    return model, opt


def _step(model: _Large, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    model(torch.ones(257)).backward()
    opt.step()


def _state_copy(model: nn.Module, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    out = [t.detach().clone() for t in model.state_dict().values()]
    for state in opt.state.values():
        out += [v.detach().clone() for v in state.values() if torch.is_tensor(v)]
    return out


def _assert_restores(tmp_path: Path, expected: list[torch.Tensor], step: int) -> None:
    model, opt = _large_job(seed=9)
    mgr = CheckpointManager(str(tmp_path / "ck")).track(model=model, optimizer=opt)
    assert mgr.resume() == step  # checksums verified against the bytes on disk
    mgr.close()
    got = _state_copy(model, opt)
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("mode", ["sync", "live", "inline", "buffered"])
def test_large_unaligned_tensors_round_trip(tmp_path: Path, mode: str, monkeypatch) -> None:
    """Synchronous and default saves write large tensors straight from their own memory; the
    unaligned head and tail of each and the small tensors go through the gather block. Where the
    file system takes O_DIRECT, no write was refused for misalignment (that falls back to
    buffered I/O for the rest of the file)."""
    from modelplane.train import storage

    sinks: list[tuple[storage._Sink, bool]] = []
    init = storage._Sink.__init__

    def record(self: storage._Sink, path: str, *, direct: bool) -> None:
        init(self, path, direct=direct)
        sinks.append((self, self.direct))

    monkeypatch.setattr(storage._Sink, "__init__", record)
    model, opt = _large_job(seed=1)
    assert any(p.data_ptr() % 4096 for p in model.parameters())
    mgr = CheckpointManager(
        str(tmp_path / "ck"),
        asynchronous=mode != "sync",
        overlap_staging=False if mode == "inline" else None,
        direct_io=mode != "buffered",
    ).track(model=model, optimizer=opt)
    expected = _state_copy(model, opt)
    mgr.save(1)
    mgr.close()
    _assert_restores(tmp_path, expected, 1)
    for sink, opened_direct in sinks:
        if opened_direct:  # this file system takes O_DIRECT
            assert sink.direct_fd is not None and sink.direct_bytes > 2_000_000


def test_live_write_switches_to_the_staged_copy_at_the_optimizer_step(tmp_path: Path, monkeypatch) -> None:
    """The default save writes from the live tensors; an optimizer step that comes while the write
    is under way first copies what the write has not read yet, and the checkpoint still holds
    exactly the state at the save call."""
    import threading

    from modelplane.train.staging import LiveSource

    paused, gate = threading.Event(), threading.Event()
    release = LiveSource.release
    sources: list[LiveSource] = []

    def slow_release(self: LiveSource, flat: torch.Tensor, hi: int, live: bool) -> None:
        release(self, flat, hi, live)
        if not paused.is_set() and self._busy == 0:  # hold the writer between live reads
            sources.append(self)
            paused.set()
            gate.wait(30)

    monkeypatch.setattr(LiveSource, "release", slow_release)
    model, opt = _large_job(seed=1)
    mgr = CheckpointManager(str(tmp_path / "ck")).track(model=model, optimizer=opt)
    expected = _state_copy(model, opt)
    record = mgr.save(1)
    assert paused.wait(30)
    _step(model, opt)  # the pre-hook stages the unread rest, then Adam changes every tensor
    gate.set()
    assert not torch.equal(next(model.parameters()), expected[0])
    mgr.close()
    assert record.error is None
    assert record.staged_bytes == sources[0].staged_bytes > 0  # the unread rest, not the whole state
    assert record.staged_bytes < sum(t.numel() * t.element_size() for t in expected)
    _assert_restores(tmp_path, expected, 1)


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c"])
def test_checksum_summed_in_parallel_pieces_equals_the_sequential_one(algorithm: str) -> None:
    """The writer sums a file in independent pieces on several threads and combines them: the
    manifest must hold the same checksum a reader computes front to back."""
    from modelplane.train.manifest import ParallelChecksum, hasher

    data = os.urandom(2 * ParallelChecksum.BLOCK + 4099)
    par = ParallelChecksum(algorithm, workers=3)
    for lo, hi in [(0, 5), (5, 5), (5, ParallelChecksum.BLOCK + 7), (ParallelChecksum.BLOCK + 7, len(data))]:
        par.update(memoryview(data)[lo:hi]).result()
    seq = hasher(algorithm)
    seq.update(data)
    assert par.hexdigest() == seq.hexdigest()


def test_optimizer_step_waits_for_live_reads_the_writer_still_holds(tmp_path: Path, monkeypatch) -> None:
    """The optimizer step comes while the writer holds live reads in a batch not yet on disk: the
    step waits for that batch, the writer takes the rest from the staged copy, and the checkpoint
    is still exactly the state at the save call."""
    import threading

    from modelplane.train import storage

    monkeypatch.setattr(storage, "BATCH", 1 << 20)  # several batches for this small state
    paused, gate = threading.Event(), threading.Event()
    write_vec = storage._Sink.write_vec

    def slow_write_vec(self: storage._Sink, parts: list[memoryview], offset: int, *, aligned: bool) -> None:
        if not paused.is_set():
            paused.set()
            gate.wait(30)
        write_vec(self, parts, offset, aligned=aligned)

    monkeypatch.setattr(storage._Sink, "write_vec", slow_write_vec)
    model, opt = _large_job(seed=1)
    mgr = CheckpointManager(str(tmp_path / "ck")).track(model=model, optimizer=opt)
    expected = _state_copy(model, opt)
    record = mgr.save(1)
    assert paused.wait(30)
    threading.Timer(0.3, gate.set).start()  # the step below blocks until the held batch is written
    _step(model, opt)
    mgr.close()
    assert record.error is None and record.staged_bytes
    _assert_restores(tmp_path, expected, 1)


@pytest.mark.parametrize("io_queue", [0, 1, 2])
def test_queued_writes_of_unaligned_odd_tensors_round_trip_bit_for_bit(
    tmp_path: Path, io_queue: int, monkeypatch
) -> None:
    """The I/O thread writes batches while the next is gathered, the two gather blocks taking
    turns; with tiny batches and blocks (many switches, heads and tails split across blocks) the
    data file must be byte for byte the one the inline writer produces, and restore exactly.

    Saved synchronously, so that both files are written from the same memory: a tensor's file
    offset follows its address, and an asynchronous save writes some tensors from its host
    snapshot, whose address (before or after the live tensors) differs from manager to manager."""
    from modelplane.train import storage
    from modelplane.train.manifest import Manifest

    monkeypatch.setattr(storage, "BATCH", 64 << 10)
    monkeypatch.setattr(storage, "GATHER", 16 << 10)
    model, opt = _large_job(seed=1)
    expected = _state_copy(model, opt)
    digests = {}
    for name, queue in (("ck", io_queue), ("inline", 0)):
        mgr = CheckpointManager(str(tmp_path / name), io_queue=queue, asynchronous=False).track(
            model=model, optimizer=opt
        )
        assert mgr.save(1).error is None
        mgr.close()
        manifest = Manifest.from_json(
            (tmp_path / name / step_dir(1) / MANIFEST_NAME).read_bytes(), where=name
        )
        digests[name] = {f: e for f, e in manifest.files.items() if f.endswith(".distcp")}
    assert digests["ck"] == digests["inline"] and digests["ck"]
    _assert_restores(tmp_path, expected, 1)


def test_a_failed_queued_write_fails_the_save_and_resume_uses_the_previous(
    tmp_path: Path, monkeypatch
) -> None:
    """A write error on the I/O thread reaches the save (no manifest: the checkpoint does not
    exist) and training state is untouched; resume falls back to the last committed step."""
    import errno

    from modelplane.train import storage

    model, opt = _large_job(seed=1)
    expected = _state_copy(model, opt)
    mgr = CheckpointManager(str(tmp_path / "ck")).track(model=model, optimizer=opt)
    assert mgr.save(1).error is None
    mgr.wait()
    monkeypatch.setattr(storage, "BATCH", 256 << 10)  # several batches: the error comes mid-file
    write_vec = storage._Sink.write_vec
    calls = []

    def failing(self: storage._Sink, parts: list[memoryview], offset: int, *, aligned: bool) -> None:
        calls.append(offset)
        if len(calls) == 2:
            raise OSError(errno.EIO, "injected I/O error")
        write_vec(self, parts, offset, aligned=aligned)

    monkeypatch.setattr(storage._Sink, "write_vec", failing)
    _step(model, opt)
    record = mgr.save(2)
    _step(model, opt)  # the optimizer step's fence must not hang on the failed write
    with pytest.raises(CheckpointError, match="injected I/O error"):
        mgr.wait()
    assert record.error and len(calls) >= 2
    assert mgr.complete_steps() == [1]
    mgr.close()
    _assert_restores(tmp_path, expected, 1)


def test_grouped_fsync_covers_every_file_before_the_manifest(tmp_path: Path, monkeypatch) -> None:
    """With ``group_fsync`` the data file, DCP's ``.metadata`` and the extras are made durable
    together, and before the manifest is written; without it nothing is deferred."""
    from modelplane.train import checkpoint, storage

    synced: list[list[str]] = []
    real = storage.fsync_paths
    write_bytes = storage.Store.write_bytes

    def recording(paths: list[str]) -> None:
        synced.append([os.path.basename(p) for p in paths])
        real(paths)

    def no_manifest_before_sync(self: storage.Store, rel: str, data: bytes, **kw: bool) -> None:
        if rel.endswith(MANIFEST_NAME):
            assert synced, "manifest written before the files it lists were synced"
        write_bytes(self, rel, data, **kw)

    monkeypatch.setattr(checkpoint, "fsync_paths", recording)
    monkeypatch.setattr(storage.Store, "write_bytes", no_manifest_before_sync)
    model, opt = _large_job(seed=1)
    mgr = CheckpointManager(str(tmp_path / "ck")).track(model=model, optimizer=opt)
    mgr.save(1)
    mgr.wait()
    assert len(synced) == 1
    names = synced[0]
    assert ".metadata" in names and any(n.endswith(".distcp") for n in names)
    assert any(n.startswith("extras") for n in names), names
    mgr.close()
    off = CheckpointManager(str(tmp_path / "ck2"), group_fsync=False).track(model=model, optimizer=opt)
    off.save(1)
    off.close()
    assert len(synced) == 1


def test_negative_io_queue_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="io_queue"):
        CheckpointManager(str(tmp_path / "ck"), io_queue=-1)


# -- the checksum: xxh3-128 by default (the xxhash extra), older algorithms still verify


def _require_xxhash() -> None:
    """xxhash is in the train extra that `make test` installs: its absence is a failed set-up, not a skip."""
    try:
        import xxhash  # noqa: F401
    except ImportError:
        pytest.fail("xxhash is missing: run `make test` (or pip install 'modelplane[train]')")


def _manifest(root: Path, step: int) -> Manifest:
    return Manifest.from_json((root / step_dir(step) / MANIFEST_NAME).read_bytes(), where=str(root))


def test_new_checkpoints_record_xxh3_when_xxhash_is_installed(tmp_path: Path) -> None:
    _require_xxhash()
    mgr, _ = _manager(tmp_path)
    mgr.save(1)
    mgr.close()
    manifest = _manifest(tmp_path / "ckpt", 1)
    assert manifest.algorithm == "xxh3-128"
    for name, entry in manifest.files.items():  # every file, data and extras, under that algorithm
        with open(tmp_path / "ckpt" / step_dir(1) / name, "rb") as fh:
            assert digest_stream(fh, "xxh3-128") == (entry.checksum, entry.size)


@pytest.mark.parametrize("algorithm", ["xxh3-128", "crc32c", "crc32", "sha256"])
def test_every_algorithm_verifies_loads_and_refuses_a_flipped_byte(tmp_path: Path, algorithm: str) -> None:
    """A checkpoint written with any algorithm (the old defaults included) loads under today's
    default manager, which verifies it with the algorithm its manifest names; one flipped byte in
    the data file makes that step refused with an error naming the file."""
    if algorithm == "xxh3-128":
        _require_xxhash()
    if algorithm == "crc32c":
        pytest.importorskip("google_crc32c")
    model, opt = _large_job(seed=1)
    mgr = CheckpointManager(str(tmp_path / "ck"), checksum=algorithm).track(model=model, optimizer=opt)
    expected2 = _state_copy(model, opt)
    mgr.save(2)
    _step(model, opt)
    mgr.save(4)
    mgr.close()
    assert _manifest(tmp_path / "ck", 4).algorithm == algorithm
    _assert_restores(tmp_path, _state_copy(model, opt), 4)

    shard = tmp_path / "ck" / step_dir(4) / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x01  # one bit, in the middle of a tensor
    shard.write_bytes(bytes(data))
    _assert_restores(tmp_path, expected2, 2)  # the corrupt newest is skipped
    fresh, fresh_opt = _large_job(seed=9)
    mgr2 = CheckpointManager(str(tmp_path / "ck")).track(model=fresh, optimizer=fresh_opt)
    with pytest.raises(CorruptCheckpoint, match=rf"__0_0\.distcp fails its {algorithm} checksum"):
        mgr2.resume(step=4)
    mgr2.close()


@pytest.mark.parametrize("on_io", [True, False])
@pytest.mark.parametrize("io_queue", [0, 2])
@pytest.mark.parametrize("direct_io", [True, False])
def test_writer_checksum_equals_the_verifiers_front_to_back_digest(
    tmp_path: Path, on_io: bool, io_queue: int, direct_io: bool, monkeypatch
) -> None:
    """The writer's digest, updated by the I/O thread after each batch or by checksum threads
    beside the write, in tiny batches and gather blocks (many of each), is the digest the
    verifier computes reading the file front to back."""
    _require_xxhash()
    from modelplane.train import storage

    monkeypatch.setattr(storage, "BATCH", 64 << 10)
    monkeypatch.setattr(storage, "GATHER", 16 << 10)
    model, opt = _large_job(seed=1)
    mgr = CheckpointManager(
        str(tmp_path / "ck"),
        checksum="xxh3-128",
        checksum_on_io=on_io,
        io_queue=io_queue,
        direct_io=direct_io,
    ).track(model=model, optimizer=opt)
    mgr.save(1)
    mgr.close()
    manifest = _manifest(tmp_path / "ck", 1)
    data = {n: e for n, e in manifest.files.items() if n.endswith(".distcp")}
    assert data
    for name, entry in data.items():
        with open(tmp_path / "ck" / step_dir(1) / name, "rb") as fh:
            assert digest_stream(fh, "xxh3-128") == (entry.checksum, entry.size)


def test_without_xxhash_the_default_falls_back_and_xxh3_checkpoints_say_what_is_missing(
    tmp_path: Path, monkeypatch
) -> None:
    """xxhash is an optional extra: without it new checkpoints use the CRC (no error), and a
    checkpoint recorded with xxh3-128 is refused with an error naming the missing package (not
    skipped as corrupt, which would silently resume from an older step)."""
    import sys

    _require_xxhash()
    mgr, _ = _manager(tmp_path / "new")
    mgr.save(1)
    mgr.close()
    monkeypatch.setitem(sys.modules, "xxhash", None)  # import xxhash raises ImportError
    assert default_algorithm() in ("crc32c", "crc32")
    old, _ = _manager(tmp_path / "old")
    assert old.checksum in ("crc32c", "crc32")
    old.save(1)
    old.close()
    assert _manifest(tmp_path / "old" / "ckpt", 1).algorithm == old.checksum
    again, _ = _manager(tmp_path / "old")
    assert again.resume() == 1
    again.close()
    with pytest.raises(CheckpointError, match="xxhash"):
        CheckpointManager(str(tmp_path / "x"), checksum="xxh3-128")
    reader, _ = _manager(tmp_path / "new")
    with pytest.raises(CheckpointError, match="xxhash") as info:
        reader.resume()  # the newest step is not skipped as corrupt: the files may well be fine
    assert not isinstance(info.value, CorruptCheckpoint)
    reader.close()


def test_unknown_checksum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="md5") as info:
        CheckpointManager(str(tmp_path / "ck"), checksum="md5")
    assert info.value.field == "checksum"
