"""Per-sample read cost of small files: one file per sample vs packed shards, local and on S3.

Prints one JSON object. Local disk (warm page cache, both sides): read every sample once in
sequential and in shuffled order, as plain files (open/read/close each) and from packed TFRecord
shards (ShardedDataset.read: pread + CRC check). S3 (SeaweedFS started here): one GET per sample
vs one ranged GET per sample from the shards, and the shards through the hot cache (memory tier,
shuffle mode 'shards', so each cached 4 MiB block serves many samples).

    PYTHONPATH=src .venv/bin/python benchmarks/small_files.py [--files 100000] [--sizes 4096,65536]
        [--s3-files 2000] [--no-s3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelplane.data.cache import CachedFileSystem, HotCache, MemoryTier
from modelplane.data.localservers import S3Server, seaweedfs_s3
from modelplane.data.shards import ShardedDataset, pack


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_files(root: Path, n: int, size: int) -> list[str]:
    rnd = random.Random(size)
    keys = []
    for i in range(n):
        key = f"d{i // 1000:04d}/s{i:07d}.bin"
        p = root / key
        if i % 1000 == 0:
            p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rnd.randbytes(size))
        keys.append(key)
    return keys


def read_plain(root: Path, keys: list[str]) -> int:
    total = 0
    for k in keys:
        with open(root / k, "rb") as f:
            total += len(f.read())
    return total


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def local_case(work: Path, n: int, size: int, shard_mb: int) -> dict[str, Any]:
    src, dst = work / f"src-{size}", work / f"ds-{size}"
    log(f"local: writing {n} files of {size} B")
    keys = make_files(src, n, size)
    log("local: packing")
    pack_s, result = timed(pack, str(src), str(dst), shard_mb << 20)
    ds = ShardedDataset(str(dst))
    shuffled_keys = keys[:]
    random.Random(0).shuffle(shuffled_keys)
    order = ds.order(epoch=0, seed=0, shuffle="global").tolist()
    out: dict[str, Any] = {"files": n, "file_bytes": size, "pack_seconds": round(pack_s, 2), "shards": result.shards}
    read_plain(src, keys)  # warm the page cache for both sides
    for i in range(len(ds)):
        ds.read(i)
    for label, plain_keys, idx in (("sequential", keys, range(len(ds))), ("shuffled", shuffled_keys, order)):
        t_plain, total = timed(read_plain, src, plain_keys)
        t_pack, _ = timed(lambda ix: [ds.read(i) for i in ix], idx)
        out[label] = {
            "plain_us_per_sample": round(t_plain / n * 1e6, 2),
            "packed_us_per_sample": round(t_pack / n * 1e6, 2),
            "plain_mb_s": round(total / t_plain / 1e6, 1),
            "packed_mb_s": round(total / t_pack / 1e6, 1),
            "speedup_packed_vs_plain": round(t_plain / t_pack, 2),
        }
    shutil.rmtree(src)
    shutil.rmtree(dst)
    return out


def s3_case(server: S3Server, work: Path, n: int, size: int) -> dict[str, Any]:
    import s3fs

    fs = s3fs.S3FileSystem(**server.storage_options(), skip_instance_cache=True)
    bucket = f"bench{size}"
    fs.mkdir(bucket)
    src = work / f"s3src-{size}"
    keys = make_files(src, n, size)
    log(f"s3: uploading {n} objects of {size} B")
    fs.put(str(src) + "/", f"{bucket}/raw/", recursive=True)
    pack(str(src), f"s3://{bucket}/ds", 64 << 20, dest_fs=fs)
    shuffled = keys[:]
    random.Random(0).shuffle(shuffled)

    def plain() -> None:
        for k in shuffled:
            fs.cat_file(f"{bucket}/raw/{k}")

    ds = ShardedDataset(f"{bucket}/ds", fs=fs)
    order = ds.order(epoch=0, seed=0, shuffle="global").tolist()
    cached = ShardedDataset(f"{bucket}/ds", fs=CachedFileSystem(HotCache(fs, [MemoryTier(1 << 30)])))
    shard_order = cached.order(epoch=0, seed=0, shuffle="shards").tolist()
    log("s3: reading")
    t_plain, _ = timed(plain)
    t_packed, _ = timed(lambda: [ds.read(i) for i in order])
    t_cold, _ = timed(lambda: [cached.read(i) for i in shard_order])
    t_warm, _ = timed(lambda: [cached.read(i) for i in order])
    shutil.rmtree(src)
    return {
        "files": n,
        "file_bytes": size,
        "plain_get_us_per_sample": round(t_plain / n * 1e6, 1),
        "packed_ranged_get_us_per_sample": round(t_packed / n * 1e6, 1),
        "packed_cache_cold_shards_order_us_per_sample": round(t_cold / n * 1e6, 1),
        "packed_cache_warm_shuffled_us_per_sample": round(t_warm / n * 1e6, 1),
        "speedup_cache_cold_vs_plain": round(t_plain / t_cold, 2),
        "speedup_cache_warm_vs_plain": round(t_plain / t_warm, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--sizes", default="4096,65536")
    ap.add_argument("--max-bytes", type=int, default=1 << 30, help="cap files*size per case (disk is shared)")
    ap.add_argument("--shard-mb", type=int, default=256)
    ap.add_argument("--s3-files", type=int, default=2000)
    ap.add_argument("--no-s3", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mp-bench-small-"))
    result: dict[str, Any] = {"cache_state": "warm page cache on both sides", "local": [], "s3": []}
    sizes = [int(s) for s in args.sizes.split(",")]
    try:
        for size in sizes:
            n = min(args.files, args.max_bytes // size)
            result["local"].append(local_case(work, n, size, args.shard_mb))
        if not args.no_s3:
            with seaweedfs_s3(work / "seaweed") as server:
                for size in sizes:
                    result["s3"].append(s3_case(server, work, args.s3_files, size))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["loadavg_1m_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    main()
