"""Hot cache tiers: bounded LRU, never stale after a rewrite, shared disk and Redis tiers."""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.data.cache import CachedFileSystem, DiskTier, HotCache, MemoryTier, RedisTier, make_tier
from modelplane.data.errors import DataError


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 20), st.integers(0, 60)), max_size=80), bound=st.integers(1, 200))
def test_memory_tier_stays_bounded_and_keeps_the_most_recent(ops: list[tuple[int, int]], bound: int) -> None:
    tier = MemoryTier(max_bytes=bound)
    for key, size in ops:
        tier.put(str(key), b"x" * size)
        assert tier.size_bytes <= bound
        if size <= bound:
            assert tier.get(str(key)) == b"x" * size  # the item just written survives


def test_memory_tier_evicts_least_recently_used() -> None:
    tier = MemoryTier(max_bytes=30)
    tier.put("a", b"a" * 10)
    tier.put("b", b"b" * 10)
    tier.put("c", b"c" * 10)
    assert tier.get("a") is not None  # a is now most recent
    tier.put("d", b"d" * 10)
    assert tier.get("b") is None and tier.get("a") is not None


def test_disk_tier_is_bounded_and_lru(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path / "c", max_bytes=10_000)
    for i in range(30):
        tier.put(f"k{i}", os.urandom(1000))
        os.utime(tier._path(f"k{i}"), ns=(i * 10**9, i * 10**9))  # deterministic ages
        if i == 8:
            assert tier.get("k0") is not None
            os.utime(tier._path("k0"), ns=(10**12, 10**12))  # k0 read: now the most recent
    assert sum(f.stat().st_size for f in (tmp_path / "c").rglob("*") if f.is_file()) <= 10_000
    assert tier.get("k0") is not None and tier.get("k1") is None and tier.get("k29") is not None
    # A second process-like instance over the same directory sees the same blocks.
    assert DiskTier(tmp_path / "c", max_bytes=10_000).get("k29") == tier.get("k29")


def test_rewritten_local_file_is_never_served_stale(tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    path = str(tmp_path / "obj")
    cache = HotCache(fs, [MemoryTier(), DiskTier(tmp_path / "cache")], block_size=1024)
    Path(path).write_bytes(b"A" * 5000)
    assert cache.cat(path) == b"A" * 5000
    assert cache.cat(path, 1000, 1100) == b"A" * 100
    misses = cache.stats.misses
    assert cache.cat(path, 0, 2048) == b"A" * 2048 and cache.stats.misses == misses
    tmp = tmp_path / "obj.new"
    tmp.write_bytes(b"B" * 5000)  # same size, new content, replaced atomically
    os.replace(tmp, path)
    assert cache.cat(path) == b"B" * 5000


def test_ec_store_behind_cache_uses_versions(tmp_path: Path) -> None:
    ec = fsspec.filesystem("ec", root=str(tmp_path / "ec"), stripe_size=65536, skip_instance_cache=True)
    ec.pipe("o", b"1" * 100_000)
    cfs = CachedFileSystem(HotCache(ec, [MemoryTier()], block_size=32 << 10))
    assert cfs.cat("o") == b"1" * 100_000
    ec.pipe("o", b"2" * 100_000)
    assert cfs.cat("o") == b"2" * 100_000
    with cfs.open("o", "rb") as f:
        f.seek(99_990)
        assert f.read() == b"2" * 10


def test_unknown_tier_name_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="unknown cache tier"):
        make_tier("flash")
    assert isinstance(make_tier("memory", max_bytes=10), MemoryTier)


def test_redis_tier_shares_blocks_between_caches(redis_url: str, tmp_path: Path) -> None:
    fs = fsspec.filesystem("file")
    path = str(tmp_path / "feat")
    Path(path).write_bytes(os.urandom(10_000))
    prefix = f"t:{os.getpid()}:"
    first = HotCache(fs, [MemoryTier(), RedisTier(redis_url, prefix=prefix)], block_size=4096)
    assert first.cat(path) == Path(path).read_bytes()
    second = HotCache(fs, [MemoryTier(), RedisTier(redis_url, prefix=prefix)], block_size=4096)
    assert second.cat(path) == Path(path).read_bytes()
    assert second.stats.misses == 0 and second.stats.hits["redis"] == 3


def test_s3_object_rewrite_is_seen_through_the_cache(s3fs_bucket: tuple[object, str], tmp_path: Path) -> None:
    fs, bucket = s3fs_bucket
    key = f"{bucket}/data/obj"
    fs.pipe(key, b"x" * 3000)  # type: ignore[attr-defined]
    cache = HotCache(fs, [MemoryTier(), DiskTier(tmp_path / "c")], block_size=1024)  # type: ignore[arg-type]
    assert cache.cat(key) == b"x" * 3000
    assert cache.cat(key) == b"x" * 3000 and cache.stats.misses == 3  # second read from memory
    fs.pipe(key, b"y" * 3000)  # type: ignore[attr-defined]
    assert cache.cat(key) == b"y" * 3000


def test_open_file_pinned_to_old_version_refuses_bytes_of_a_newer_one(tmp_path: Path) -> None:
    from modelplane.data.cache import ObjectChanged

    ec = fsspec.filesystem("ec", root=str(tmp_path / "ec"), stripe_size=65536, skip_instance_cache=True)
    ec.pipe("o", b"1" * 50_000)
    cfs = CachedFileSystem(HotCache(ec, [MemoryTier()], block_size=16 << 10))
    f = cfs.open("o", "rb")
    assert f.read(10) == b"1" * 10
    ec.pipe("o", b"2" * 50_000)
    f.seek(40_000)
    with pytest.raises(ObjectChanged, match="Reopen"):
        f.read(10)
    assert cfs.cat("o") == b"2" * 50_000
