"""Measuring storage where it lives: a directory, a real erasure-coded store, a real S3 bucket."""

from pathlib import Path

import pytest

from modelplane.core.storage_cost import UNATTRIBUTED, StoragePrices, StoredBytes, storage_cost
from modelplane.data.ecstore import ErasureCodedStore
from modelplane.data.erasure import ErasureProfile
from modelplane.data.errors import DataError
from modelplane.data.storage_usage import (
    CACHE_DATASET,
    UNREFERENCED,
    Source,
    attribute,
    measure,
    measure_bucket,
    measure_directory,
    measure_ec_store,
    parse_sources,
)


def by_dataset(items: list[StoredBytes]) -> dict[str, StoredBytes]:
    return {i.dataset: i for i in items}


def write(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * n)


def test_attribution_from_the_path_or_metadata():
    assert attribute("teams/vision/imagenet/shard-0001.tfrecord") == ("teams/vision/imagenet", "vision")
    assert attribute("raw/logs/2026/11/a.json") == ("raw/logs", UNATTRIBUTED)
    assert attribute("raw/a.json") == ("raw", UNATTRIBUTED)
    assert attribute("a.json") == ("a.json", UNATTRIBUTED)
    assert attribute("raw/logs/a.json", team="ops") == ("raw/logs", "ops")


def test_a_directory_is_summed_per_dataset_and_skips_writes_in_progress(tmp_path: Path):
    write(tmp_path / "teams/a/x/part-0", 1000)
    write(tmp_path / "teams/a/x/sub/part-1", 500)
    write(tmp_path / "teams/b/y/part-0", 300)
    write(tmp_path / "misc/z/q", 7)
    write(tmp_path / "teams/a/x/.tmp-123", 10_000)
    got = by_dataset(measure_directory(tmp_path))
    assert got["teams/a/x"] == StoredBytes("hot", "teams/a/x", "a", 1500, 1500)
    assert got["teams/b/y"].team == "b" and got["teams/b/y"].stored_bytes == 300
    assert got["misc/z"].team == UNATTRIBUTED
    cache = measure_directory(tmp_path, dataset=CACHE_DATASET)
    assert cache == [StoredBytes("hot", CACHE_DATASET, UNATTRIBUTED, 1807, 1807)]
    with pytest.raises(DataError, match="not a directory"):
        measure_directory(tmp_path / "missing")


def test_an_erasure_coded_store_counts_parity_and_unreferenced_fragments(tmp_path: Path):
    profile = ErasureProfile(k=4, m=2, stripe_size=64 * 1024)
    store = ErasureCodedStore.at_root(tmp_path / "ec", profile, durable=False)
    store.put("teams/a/x/part-0", b"a" * 100_000)
    store.put("teams/a/x/part-1", b"b" * 60_000)
    store.put("shared/y/blob", b"c" * 40_000, metadata={"team": "b"})
    got = by_dataset(measure_ec_store(tmp_path / "ec"))
    x = got["teams/a/x"]
    assert x.tier == "ec" and x.team == "a" and x.logical_bytes == 160_000
    assert x.stored_bytes >= 160_000 * 6 // 4  # fragments of k+m disks, padded to the codec's alignment
    frag_bytes = sum(f.stat().st_size for f in (tmp_path / "ec").glob("disk*/frags/*/*"))
    assert sum(i.stored_bytes for i in got.values()) == frag_bytes  # every byte on the disks is accounted for
    assert got["shared/y"].team == "b"  # metadata names the owner
    assert UNREFERENCED not in got
    leftover = next((tmp_path / "ec/disk0/frags").glob("*/*"))  # what a writer that crashed leaves behind:
    (leftover.parent / ("f" * 32 + ".0")).write_bytes(leftover.read_bytes())  # fragments of no manifest
    got = by_dataset(measure_ec_store(tmp_path / "ec"))
    assert got[UNREFERENCED].stored_bytes == leftover.stat().st_size
    assert got[UNREFERENCED].stored_bytes > 0 and got[UNREFERENCED].logical_bytes == 0
    assert store.collect_garbage(older_than_s=0) > 0
    assert UNREFERENCED not in by_dataset(measure_ec_store(tmp_path / "ec"))
    r = storage_cost(measure_ec_store(tmp_path / "ec"), StoragePrices(), 730 * 3600)
    assert r.by_tier["ec"].stored_bytes > r.by_tier["ec"].logical_bytes  # priced on raw bytes
    with pytest.raises(DataError, match="no erasure-coded store"):
        measure_ec_store(tmp_path)


def test_a_bucket_is_tiered_by_storage_class(s3_server):
    import s3fs

    opts = s3_server.storage_options()
    fs = s3fs.S3FileSystem(**opts)
    fs.mkdir("usage-bucket")
    fs.pipe("usage-bucket/data/teams/a/x/p0", b"x" * 1000)
    fs.pipe("usage-bucket/data/teams/a/x/p1", b"x" * 24)
    fs.pipe_file("usage-bucket/data/teams/b/old/p0", b"y" * 500, StorageClass="STANDARD_IA")
    fs.pipe("usage-bucket/other/z", b"z" * 9)
    got = measure_bucket("s3://usage-bucket/data", opts)
    assert sorted((i.tier, i.dataset, i.team, i.stored_bytes) for i in got) == [
        ("s3-ia", "teams/b/old", "b", 500), ("s3-standard", "teams/a/x", "a", 1024)]
    with pytest.raises(DataError, match="cannot list"):
        measure_bucket("s3://no-such-bucket-here/x", opts)


def test_sources_from_settings(tmp_path: Path):
    write(tmp_path / "ssd/teams/a/x/p", 10)
    write(tmp_path / "cache/ab/abcdef", 20)
    sources = parse_sources([f"hot={tmp_path / 'ssd'}", f" cache = {tmp_path / 'cache'}"])
    assert sources[1] == Source("cache", str(tmp_path / "cache"))
    got = {(i.tier, i.dataset): i.stored_bytes for i in measure(sources)}
    assert got == {("hot", "teams/a/x"): 10, ("hot", CACHE_DATASET): 20}
    for bad in ("nfs=/x", "/just/a/path", "ec="):
        with pytest.raises(DataError, match="KIND=URL"):
            parse_sources([bad])
