"""Stores end to end against a real S3 server (SeaweedFS) and the ec:// store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
import pytest
import s3fs

from modelplane.data.cache import CachedFileSystem, HotCache, MemoryTier
from modelplane.data.localservers import S3Server
from modelplane.data.shards import ShardedDataset, pack


def _tree(root: Path, n: int = 40) -> dict[str, bytes]:
    files = {f"d{i % 4}/f{i:03d}": bytes([i % 251]) * (i * 37 % 900) for i in range(n)}
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return files


def test_s3_rejects_a_wrong_secret(s3_server: S3Server, s3fs_bucket: tuple[Any, str]) -> None:
    _, bucket = s3fs_bucket
    opts = s3_server.storage_options() | {"secret": "wrong"}
    with pytest.raises(PermissionError):
        s3fs.S3FileSystem(**opts, skip_instance_cache=True).ls(bucket)


def test_pack_to_s3_and_read_direct_and_through_cache(s3fs_bucket: tuple[Any, str], tmp_path: Path) -> None:
    fs, bucket = s3fs_bucket
    files = _tree(tmp_path / "src")
    result = pack(str(tmp_path / "src"), f"s3://{bucket}/ds", shard_size=4096, dest_fs=fs)
    assert result.samples == len(files) and result.shards > 1
    direct = ShardedDataset(f"{bucket}/ds", fs=fs)
    cached = ShardedDataset(f"{bucket}/ds", fs=CachedFileSystem(HotCache(fs, [MemoryTier()], block_size=8192)))
    for key, data in files.items():
        assert direct.get(key) == data
        assert cached.get(key) == data
    assert [k for k, _ in cached.iter_epoch(epoch=1, seed=3)] == [direct.keys[i] for i in direct.order(epoch=1, seed=3)]


def test_pack_from_s3_into_erasure_coded_store(s3fs_bucket: tuple[Any, str], tmp_path: Path) -> None:
    fs, bucket = s3fs_bucket
    files = _tree(tmp_path / "src", n=25)
    fs.put(str(tmp_path / "src") + "/", f"{bucket}/raw/", recursive=True)
    ec = fsspec.filesystem("ec", root=str(tmp_path / "ec"), stripe_size=65536, skip_instance_cache=True)
    pack(f"{bucket}/raw", "ec://ds", shard_size=2048, src_fs=fs, dest_fs=ec)
    ds = ShardedDataset("ec://ds", fs=ec)
    assert {k: ds.get(k) for k in ds.keys} == files
    # The shards survive the loss of two disks.
    import shutil

    shutil.rmtree(tmp_path / "ec" / "disk0")
    shutil.rmtree(tmp_path / "ec" / "disk3")
    ec2 = fsspec.filesystem("ec", root=str(tmp_path / "ec"), stripe_size=65536, skip_instance_cache=True)
    assert {k: ShardedDataset("ec://ds", fs=ec2).get(k) for k in ds.keys} == files
