"""Peer-memory checkpoint tier on real redis-servers: resume from memory, fall back to the durable
tier when the peer is gone, flushed, stale or corrupt, and never expose a half-copied step."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch

from modelplane.data.errors import MissingDependency
from modelplane.data.localservers import redis_server
from modelplane.train.checkpoint import CheckpointManager, step_dir
from modelplane.train.errors import CheckpointError
from modelplane.train.manifest import MANIFEST_NAME
from modelplane.train.peer_memory import ENV_URLS, PeerMemoryTier, urls_from_env
from tests.train.test_checkpoint import _job, _train


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server per test (tests kill or flush it)."""
    try:
        with redis_server(tmp_path / "redis") as url:
            yield url
    except MissingDependency as exc:
        pytest.fail(f"redis-server is needed for the peer-memory tests: {exc}", pytrace=False)


def _manager(root: Path, urls: list[str], seed: int = 0) -> tuple[CheckpointManager, tuple]:
    job = _job(seed)
    mgr = CheckpointManager(str(root), peer_memory_urls=urls)
    mgr.track(model=job[0], optimizer=job[1], scheduler=job[2], data=job[3])
    return mgr, job


def _saved_run(root: Path, urls: list[str]) -> tuple:
    """Train 5 steps with asynchronous saves at 3 and 5; return the job as it was at step 5."""
    mgr, job = _manager(root, urls)
    _train(*job, steps=3)
    mgr.save(3)
    _train(*job, steps=2)
    record = mgr.save(5)
    mgr.close()
    assert record.error is None
    return job, record


def _assert_same(a: tuple, b: tuple) -> None:
    for p, q in zip(a[0].parameters(), b[0].parameters(), strict=True):
        assert torch.equal(p, q)
    assert a[2].state_dict() == b[2].state_dict()
    assert a[3].state_dict() == b[3].state_dict()


def test_resume_reads_the_newest_step_from_peer_memory(tmp_path: Path, redis_url: str) -> None:
    ref = _job()
    _train(*ref, steps=7)  # the same job without interruption
    root = tmp_path / "ckpt"
    job, record = _saved_run(root, [redis_url])
    assert record.mirrored is True
    client = redis.Redis.from_url(redis_url)
    keys = sorted(k.decode().split(":", 3)[-1] for k in client.keys("*"))
    assert keys[0] == "r0:latest" and len(keys) == 2 and keys[1].startswith("r0:step:5:")  # newest step only
    # the durable tensor file is gone: a resume that still succeeds can only have read memory
    (root / step_dir(5) / "__0_0.distcp").unlink()

    mgr2, fresh = _manager(root, [redis_url], seed=1)
    assert mgr2.resume() == 5
    assert mgr2.last_resume_tier == "memory"
    _assert_same(job, fresh)
    # training continues exactly as the uninterrupted run, RNG (dropout) included
    _train(*fresh, steps=2)
    _assert_same(ref, fresh)
    mgr2.close()


def test_dead_peer_falls_back_to_the_durable_tier(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    with redis_server(tmp_path / "redis") as url:
        job, record = _saved_run(root, [url])
        assert record.mirrored is True
    # the server is stopped: the peer node died with the failure
    mgr2, fresh = _manager(root, [url], seed=1)
    assert mgr2.resume() == 5
    assert mgr2.last_resume_tier == "durable"
    assert "could not read" in mgr2.memory_skipped[0]
    _assert_same(job, fresh)
    mgr2.close()


def test_flushed_peer_falls_back_to_the_durable_tier(tmp_path: Path, redis_url: str) -> None:
    root = tmp_path / "ckpt"
    job, _ = _saved_run(root, [redis_url])
    redis.Redis.from_url(redis_url).flushall()
    mgr2, fresh = _manager(root, [redis_url], seed=1)
    assert mgr2.resume() == 5
    assert mgr2.last_resume_tier == "durable"
    _assert_same(job, fresh)
    mgr2.close()


def test_corrupt_memory_copy_is_detected_and_skipped(tmp_path: Path, redis_url: str) -> None:
    root = tmp_path / "ckpt"
    job, _ = _saved_run(root, [redis_url])
    client = redis.Redis.from_url(redis_url)
    (key,) = [k for k in client.keys("*:r0:step:5:*")]
    data = bytearray(client.hget(key, "__0_0.distcp"))
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the peer's RAM
    client.hset(key, "__0_0.distcp", bytes(data))

    mgr2, fresh = _manager(root, [redis_url], seed=1)
    assert mgr2.resume() == 5
    assert mgr2.last_resume_tier == "durable"
    assert "__0_0.distcp" in mgr2.memory_skipped[0] and "checksum" in mgr2.memory_skipped[0]
    _assert_same(job, fresh)
    mgr2.close()


def test_stale_memory_copy_loses_to_a_newer_durable_step(tmp_path: Path, redis_url: str) -> None:
    root = tmp_path / "ckpt"
    mgr, job = _manager(root, [redis_url])
    _train(*job, steps=3)
    mgr.save(3)
    mgr.close()
    plain, _ = _manager(root, [])  # a save the tier never saw (e.g. the mirror was off)
    plain.track(model=job[0], optimizer=job[1], scheduler=job[2], data=job[3])
    _train(*job, steps=2)
    plain.save(5)
    plain.close()

    mgr2, fresh = _manager(root, [redis_url], seed=1)
    assert mgr2.resume() == 5
    assert mgr2.last_resume_tier == "durable"
    assert "step 3" in mgr2.memory_skipped[0]
    _assert_same(job, fresh)
    mgr2.close()


def test_newer_memory_copy_is_used_when_its_own_manifest_verifies(tmp_path: Path, redis_url: str) -> None:
    root = tmp_path / "ckpt"
    job, _ = _saved_run(root, [redis_url])
    (root / step_dir(5) / MANIFEST_NAME).unlink()  # durable commit of step 5 lost: durable newest is 3
    mgr2, fresh = _manager(root, [redis_url], seed=1)
    assert mgr2.resume() == 5
    assert mgr2.last_resume_tier == "memory"
    _assert_same(job, fresh)
    mgr2.close()


def test_reader_never_sees_a_half_copied_step(redis_url: str) -> None:
    """A writer replaces the step over and over with large files; a concurrent reader must always
    get one whole step: all files present and all tagged with the step the pointer names."""
    tier = PeerMemoryTier([redis_url], "test:atomic")
    names = [f"f{i}" for i in range(8)]
    stop = threading.Event()
    seen: list[tuple[int, set[bytes], set[str]]] = []

    def read() -> None:
        reader = PeerMemoryTier([redis_url], "test:atomic")
        while not stop.is_set():
            copy = reader.fetch(0)
            if copy is not None:
                seen.append((copy.step, {b[:8] for b in copy.files.values()}, set(copy.files)))
        reader.close()

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for step in range(1, 40):
            tier.put(0, step, {n: f"{step:08d}".encode() + bytes(200_000) for n in names})
    finally:
        stop.set()
        thread.join()
    assert seen, "the reader never ran"
    for step, tags, files in seen:
        assert files == set(names)
        assert tags == {f"{step:08d}".encode()}
    client = redis.Redis.from_url(redis_url)
    keys = sorted(k.decode() for k in client.keys("test:atomic:*"))
    assert (
        keys[0] == "test:atomic:r0:latest"
        and len(keys) == 2
        and keys[1].startswith("test:atomic:r0:step:39:")
    )
    tier.clear()
    assert client.keys("test:atomic:*") == []
    tier.close()


def test_rank_mirrors_to_the_next_node_and_urls_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tier = PeerMemoryTier(["redis://a:1/0", "redis://b:1/0", "redis://c:1/0"], "ns")
    assert [tier.peer_url(r) for r in range(4)] == [
        "redis://b:1/0",
        "redis://c:1/0",
        "redis://a:1/0",
        "redis://b:1/0",
    ]
    monkeypatch.setenv(ENV_URLS, " redis://a:1/0, redis://b:1/0 ,")
    assert urls_from_env() == ["redis://a:1/0", "redis://b:1/0"]
    mgr = CheckpointManager(str(tmp_path / "ck"))
    assert mgr.peer is not None and mgr.peer.urls == ["redis://a:1/0", "redis://b:1/0"]
    mgr.close()
    with pytest.raises(CheckpointError, match="not a Redis URL"):
        CheckpointManager(str(tmp_path / "ck"), peer_memory_urls=["http://x"])


@pytest.mark.integration
def test_two_rank_job_mirrors_each_rank_to_the_next_node(tmp_path: Path) -> None:
    """A real 2-rank DDP job with one redis-server per "node": rank 0's files land on node 1's
    store, rank 1's on node 0's; a 1-rank resume reassembles the step from both memories."""
    from modelplane.train.data_position import ResumableBatchSampler
    from tests.train.ddp_worker import DATASET_LEN, GLOBAL_BATCH, make_model, make_optim
    from tests.train.launch import launch

    ck = tmp_path / "ck"
    with redis_server(tmp_path / "node0") as node0, redis_server(tmp_path / "node1") as node1:
        launch(
            "ddp_worker.py",
            2,
            ["--ckpt", str(ck), "--steps", "4", "--out", str(tmp_path / "a.pt"), "--save-every", "2"],
            extra_env={ENV_URLS: f"{node0},{node1}"},
        )
        first = torch.load(tmp_path / "a.pt")
        on0 = sorted(k.decode().split(":", 3)[-1] for k in redis.Redis.from_url(node0).keys("*"))
        on1 = sorted(k.decode().split(":", 3)[-1] for k in redis.Redis.from_url(node1).keys("*"))
        assert on0[0] == "r1:latest" and len(on0) == 2 and on0[1].startswith("r1:step:4:")
        assert on1[0] == "r0:latest" and len(on1) == 2 and on1[1].startswith("r0:step:4:")
        (r0_key,) = redis.Redis.from_url(node1).keys("*:r0:step:4:*")
        assert MANIFEST_NAME.encode() in redis.Redis.from_url(node1).hkeys(r0_key)

        model = make_model(0.0)
        opt, sched = make_optim(model)
        sampler = ResumableBatchSampler(DATASET_LEN, global_batch_size=GLOBAL_BATCH, seed=3)
        mgr = CheckpointManager(str(ck), peer_memory_urls=[node0, node1])
        mgr.track(model=model, optimizer=opt, scheduler=sched, data=sampler)
        assert mgr.resume() == 4
        assert mgr.last_resume_tier == "memory"
        for name, value in first["params"].items():
            assert torch.equal(model.state_dict()[name], value), name
        assert sampler.state_dict()["consumed"] == 4 * GLOBAL_BATCH
        mgr.close()


def test_resume_from_the_durable_tier_reseeds_the_new_peer(tmp_path: Path) -> None:
    """Migration: the copy lived in the old node's Redis; the job resumes on a new placement whose
    store is empty, reads the durable tier, and puts the step it loaded back into the new store,
    so the next failure recovers from memory again."""
    root = tmp_path / "ckpt"
    with redis_server(tmp_path / "old") as old:
        job, record = _saved_run(root, [old])
        assert record.mirrored is True
    with redis_server(tmp_path / "new") as new:
        mgr2, fresh = _manager(root, [new], seed=1)
        assert mgr2.resume() == 5
        assert mgr2.last_resume_tier == "durable"
        _assert_same(job, fresh)
        mgr2.wait()  # the re-seed runs in the background thread
        assert mgr2.reseeded == [0]
        mgr2.close()
        keys = sorted(k.decode().split(":", 3)[-1] for k in redis.Redis.from_url(new).keys("*"))
        assert keys[0] == "r0:latest" and len(keys) == 2 and keys[1].startswith("r0:step:5:")
        # the next failure: the durable shard is gone, so only the re-seeded copy can serve it
        (root / step_dir(5) / "__0_0.distcp").unlink()
        mgr3, third = _manager(root, [new], seed=2)
        assert mgr3.resume() == 5
        assert mgr3.last_resume_tier == "memory"
        _assert_same(job, third)
        mgr3.close()


def test_resume_from_memory_does_not_rewrite_the_copy(tmp_path: Path, redis_url: str) -> None:
    root = tmp_path / "ckpt"
    _saved_run(root, [redis_url])
    client = redis.Redis.from_url(redis_url)
    before = sorted(client.keys("*"))
    mgr2, _fresh = _manager(root, [redis_url], seed=1)
    assert mgr2.resume() == 5
    mgr2.close()
    assert mgr2.last_resume_tier == "memory" and mgr2.reseeded == []
    assert sorted(client.keys("*")) == before  # same step key: nothing was put again


@pytest.mark.integration
def test_two_rank_job_reseeds_peers_after_migrating_to_new_nodes(tmp_path: Path) -> None:
    """A 2-rank job mirrors to nodes 0 and 1, then "migrates": a 2-rank relaunch on nodes 2 and 3
    (empty stores) resumes from the durable tier and re-seeds them, each rank's files on the next
    node as a save would put them; a resume after that reads the step from the new nodes' memory."""
    from modelplane.train.data_position import ResumableBatchSampler
    from tests.train.ddp_worker import DATASET_LEN, GLOBAL_BATCH, make_model, make_optim
    from tests.train.launch import launch

    ck = tmp_path / "ck"
    args = ["--ckpt", str(ck), "--steps", "4", "--out", str(tmp_path / "a.pt"), "--save-every", "2"]
    with redis_server(tmp_path / "node0") as node0, redis_server(tmp_path / "node1") as node1:
        launch("ddp_worker.py", 2, args, extra_env={ENV_URLS: f"{node0},{node1}"})
    first = torch.load(tmp_path / "a.pt")
    with redis_server(tmp_path / "node2") as node2, redis_server(tmp_path / "node3") as node3:
        launch("ddp_worker.py", 2, args, extra_env={ENV_URLS: f"{node2},{node3}"})
        on2 = sorted(k.decode().split(":", 3)[-1] for k in redis.Redis.from_url(node2).keys("*"))
        on3 = sorted(k.decode().split(":", 3)[-1] for k in redis.Redis.from_url(node3).keys("*"))
        assert on2[0] == "r1:latest" and len(on2) == 2 and on2[1].startswith("r1:step:4:")
        assert on3[0] == "r0:latest" and len(on3) == 2 and on3[1].startswith("r0:step:4:")

        for shard in ck.glob("step-000000000004/__*_0.distcp"):
            shard.unlink()  # only the re-seeded memory copy can serve this resume
        model = make_model(0.0)
        opt, sched = make_optim(model)
        sampler = ResumableBatchSampler(DATASET_LEN, global_batch_size=GLOBAL_BATCH, seed=3)
        mgr = CheckpointManager(str(ck), peer_memory_urls=[node2, node3])
        mgr.track(model=model, optimizer=opt, scheduler=sched, data=sampler)
        assert mgr.resume() == 4
        assert mgr.last_resume_tier == "memory"
        for name, value in first["params"].items():
            assert torch.equal(model.state_dict()[name], value), name
        mgr.close()
