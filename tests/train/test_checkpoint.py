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
from modelplane.train.manifest import MANIFEST_NAME
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


def test_by_default_the_copy_overlaps_and_falls_back_to_inline_after_an_outside_change(tmp_path: Path) -> None:
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
def test_raw_format_round_trips_dtypes_and_shapes(tmp_path: Path, asynchronous: bool, direct_io: bool) -> None:
    """Direct I/O from the snapshot, through bounce buffers (synchronous), and buffered; resume
    verifies the checksum the writer computed in the same pass against the bytes on disk."""
    src, dst = _Odd(1), _Odd(2)
    mgr = CheckpointManager(str(tmp_path / "ck"), asynchronous=asynchronous, direct_io=direct_io).track(model=src)
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
    dcp.save({"model": model.state_dict()}, storage_writer=FileSystemWriter(str(tmp_path / "stock")), no_dist=True)
    other, _o2, _s2, _d2 = _job(seed=3)
    target = {"model": other.state_dict()}
    dcp.load(target, storage_reader=raw_reader(str(tmp_path / "stock"), local=True), no_dist=True)
    other.load_state_dict(target["model"])
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
