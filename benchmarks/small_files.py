"""Per-sample read cost of small files: one file per sample vs packed shards, local and on S3.

Prints one JSON object. Local disk: read every sample once in shuffled order with both sides evicted
from the page cache, then (warm page cache on both sides, residency checked with fincore) in
sequential and shuffled order as plain files (open/read/close each; and the leaner os.open/read)
and from packed TFRecord shards (ShardedDataset.read from a memory-mapped shard checked once by
its whole-shard CRC; read_many in batches; and per-record CRC checks). CPU time per sample is the
headline because the machine is shared; wall time is reported beside it with the load average.
S3 (SeaweedFS started here): one GET per sample vs one ranged GET per sample from the shards, and
the shards through the hot cache (memory tier, shuffle mode 'shards', so each cached 4 MiB block
serves many samples). Sensitive shards ('sealed'): the same packed set plain and encrypted in place
(``modelplane data protect``) with 16 KiB (the default for shard sets), 64 KiB and 1 MiB segments,
read warm in shuffled and sequential order, per sample and in batches.

    PYTHONPATH=src .venv/bin/python benchmarks/small_files.py [--files 100000] [--sizes 4096,65536]
        [--s3-files 2000] [--no-s3] [--rounds 3] [--sealed-files 20000] [--sealed-only]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelplane.data.cache import CachedFileSystem, HotCache, MemoryTier
from modelplane.data.localservers import S3Server, seaweedfs_s3
from modelplane.data.sensitive import DataKey, encrypt_dataset
from modelplane.data.shards import SEALED_SEGMENT, ShardedDataset, pack


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


def read_plain(paths: list[str]) -> int:
    """The idiomatic per-sample read of a file dataset: open, read, close (paths precomputed)."""
    total = 0
    for p in paths:
        with open(p, "rb") as f:
            total += len(f.read())
    return total


def read_plain_os(paths: list[str]) -> int:
    """The leanest plain read Python has (os.open/fstat/read/close, no file object): a stricter baseline."""
    total = 0
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            total += len(os.read(fd, os.fstat(fd).st_size))
        finally:
            os.close(fd)
    return total


def read_packed(ds: ShardedDataset, idx: list[int]) -> int:
    """One ``read`` call per sample (the map-style Dataset path)."""
    r = ds.read
    return sum(len(r(i)) for i in idx)


def read_packed_many(ds: ShardedDataset, idx: list[int], batch: int = 64) -> int:
    """``read_many`` per batch of 64 (the DataLoader batch path, ``__getitems__``)."""
    return sum(len(p) for b in range(0, len(idx), batch) for p in ds.read_many(idx[b : b + batch]))


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def cpu_wall(fn: Any, *args: Any) -> tuple[float, float, Any]:
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    return time.process_time() - c0, time.perf_counter() - t0, out


def resident_fraction(paths: list[str]) -> float | None:
    """Share of the bytes of ``paths`` in the page cache (util-linux ``fincore``), None without it."""
    if not shutil.which("fincore") or not paths:
        return None
    res = size = 0
    for b in range(0, len(paths), 500):
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE",
                              *paths[b : b + 500]], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            r, z = line.split()
            res, size = res + int(r), size + int(z)
    return round(res / size, 4) if size else None


def drop_cache(paths: list[str]) -> None:
    """Evict these files' pages: write back dirty pages first (sync), then posix_fadvise DONTNEED."""
    os.sync()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def local_case(work: Path, n: int, size: int, shard_mb: int, rounds: int) -> dict[str, Any]:
    src, dst = work / f"src-{size}", work / f"ds-{size}"
    log(f"local: writing {n} files of {size} B")
    keys = make_files(src, n, size)
    log("local: packing")
    pack_s, result = timed(pack, str(src), str(dst), shard_mb << 20)
    paths = [str(src / k) for k in keys]
    ds0 = ShardedDataset(str(dst))
    shard_paths = [str(dst / s["name"]) for s in ds0.shards]
    order = ds0.order(epoch=0, seed=0, shuffle="global").tolist()
    pos = {k: i for i, k in enumerate(keys)}
    by_index = [paths[pos[k]] for k in ds0.keys]  # plain path of packed sample i
    ds0.close()
    out: dict[str, Any] = {"files": n, "file_bytes": size, "pack_seconds": round(pack_s, 2),
                           "shards": result.shards, "loadavg_1m_start": round(os.getloadavg()[0], 2)}
    sample = random.Random(1).sample(paths, min(2000, n))

    # Cold: both sides evicted from the page cache (dentries and inodes stay warm: favours plain).
    # Packed: the first touch of a shard checks it whole (sequential read), then serves from memory.
    drop_cache(paths)
    drop_cache(shard_paths)
    out["cold_resident_before"] = {"plain_sample": resident_fraction(sample), "shards": resident_fraction(shard_paths)}
    plain_paths = [by_index[i] for i in order]
    cp, wp, _ = cpu_wall(read_plain, plain_paths)
    ds = ShardedDataset(str(dst))
    ck, wk, _ = cpu_wall(read_packed, ds, order)
    out["shuffled_cold"] = {
        "plain_us_per_sample_wall": round(wp / n * 1e6, 2), "packed_us_per_sample_wall": round(wk / n * 1e6, 2),
        "plain_us_per_sample_cpu": round(cp / n * 1e6, 2), "packed_us_per_sample_cpu": round(ck / n * 1e6, 2),
        "speedup_packed_vs_plain_wall": round(wp / wk, 2),
    }
    # Warm: both sides fully in the page cache (checked with fincore), every shard already checked.
    read_plain(paths)
    read_packed(ds, list(range(n)))
    out["warm_resident"] = {"plain_sample": resident_fraction(sample), "shards": resident_fraction(shard_paths)}
    dsr = ShardedDataset(str(dst), verify="record")
    read_packed(dsr, list(range(n)))
    seq = list(range(n))
    for label, idx in (("sequential", seq), ("shuffled", order)):
        plain_paths = [by_index[i] for i in idx]
        variants = {
            "plain": lambda pp=plain_paths: read_plain(pp),
            "plain_os": lambda pp=plain_paths: read_plain_os(pp),
            "packed": lambda ix=idx: read_packed(ds, ix),
            "packed_read_many": lambda ix=idx: read_packed_many(ds, ix),
            "packed_record_crc": lambda ix=idx: read_packed(dsr, ix),
        }
        cpu: dict[str, list[float]] = {v: [] for v in variants}
        wall: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(rounds):  # interleaved rounds: load swings hit every variant alike
            for v, fn in variants.items():
                c, w, total = cpu_wall(fn)
                assert total == n * size, (v, total)
                cpu[v].append(c)
                wall[v].append(w)
        row: dict[str, Any] = {}
        for v in variants:
            row[f"{v}_us_per_sample_cpu"] = round(min(cpu[v]) / n * 1e6, 2)
            row[f"{v}_us_per_sample_wall"] = round(statistics.median(wall[v]) / n * 1e6, 2)
        for v in ("packed", "packed_read_many", "packed_record_crc"):
            row[f"speedup_{v}_vs_plain_cpu"] = round(min(cpu["plain"]) / min(cpu[v]), 2)
            row[f"speedup_{v}_vs_plain_wall"] = round(statistics.median(wall["plain"]) / statistics.median(wall[v]), 2)
        row["speedup_packed_vs_plain_os_cpu"] = round(min(cpu["plain_os"]) / min(cpu["packed"]), 2)
        row["plain_mb_s_wall"] = round(n * size / statistics.median(wall["plain"]) / 1e6, 1)
        row["packed_mb_s_wall"] = round(n * size / statistics.median(wall["packed"]) / 1e6, 1)
        out[label] = row
    ds.close()
    dsr.close()
    out["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    shutil.rmtree(src)
    shutil.rmtree(dst)
    return out


def sealed_case(work: Path, n: int, size: int, rounds: int) -> dict[str, Any]:
    """Warm random and sequential reads of one packed set, plain and encrypted with three segment sizes."""
    src, plain = work / "sealed-src", work / "sealed-plain"
    make_files(src, n, size)
    pack(str(src), str(plain), 64 << 20)
    shutil.rmtree(src)
    key = DataKey.generate()
    sets = {"plain": ShardedDataset(str(plain))}
    for label, segment in (("sealed_16k", 16 << 10), ("sealed_64k", 64 << 10), ("sealed_1m", 1 << 20)):
        dest = work / f"sealed-{label}"
        shutil.copytree(plain, dest)
        encrypt_dataset(str(dest), key, segment=segment)
        sets[label] = ShardedDataset(str(dest), data_key=key)
    order = sets["plain"].order(epoch=0, seed=0, shuffle="global").tolist()
    for ds in sets.values():  # warm: page cache, maps, per-shard checks
        read_packed(ds, list(range(n)))
    out: dict[str, Any] = {"files": n, "file_bytes": size, "shards": len(sets["plain"].shards),
                           "segment_default": SEALED_SEGMENT, "loadavg_1m_start": round(os.getloadavg()[0], 2)}
    for label, idx in (("shuffled", order), ("sequential", list(range(n)))):
        cpu: dict[str, float] = {}
        for _ in range(rounds):
            for name, ds in sets.items():
                for how, fn in (("read", read_packed), ("read_many", read_packed_many)):
                    c, _, total = cpu_wall(fn, ds, idx)
                    assert total == n * size, (name, total)
                    cpu[f"{name}_{how}"] = min(cpu.get(f"{name}_{how}", c), c)
        row: dict[str, Any] = {f"{k}_us_per_sample_cpu": round(v / n * 1e6, 2) for k, v in cpu.items()}
        default = f"sealed_{SEALED_SEGMENT >> 10}k"
        for how in ("read", "read_many"):
            row[f"slowdown_{default}_vs_plain_{how}"] = round(cpu[f"{default}_{how}"] / cpu[f"plain_{how}"], 2)
        row[f"{default}_read_many_samples_per_s_cpu"] = round(n / cpu[f"{default}_read_many"])
        out[label] = row
    for ds in sets.values():
        ds.close()
    out["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    for label in sets:
        shutil.rmtree(work / f"sealed-{label}", ignore_errors=True)
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
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per variant (min CPU kept)")
    ap.add_argument("--sealed-files", type=int, default=20_000, help="samples of the encrypted-shards case (0: skip)")
    ap.add_argument("--sealed-only", action="store_true", help="run only the encrypted-shards case")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mp-bench-small-"))
    result: dict[str, Any] = {
        "cache_state": "local: 'shuffled_cold' after evicting both sides (posix_fadvise), then warm page "
                       "cache on both sides (fincore residency reported); S3: server on this machine",
        "timing": "cpu = min process time over interleaved rounds (user+sys, robust to load); "
                  "wall = median; the machine is shared, so wall figures carry the load average",
        "loadavg_1m_start": round(os.getloadavg()[0], 2), "local": [], "s3": []}
    sizes = [int(s) for s in args.sizes.split(",")]
    try:
        if args.sealed_files:
            result["sealed"] = sealed_case(work, args.sealed_files, sizes[0], args.rounds)
        for size in [] if args.sealed_only else sizes:
            n = min(args.files, args.max_bytes // size)
            result["local"].append(local_case(work, n, size, args.shard_mb, args.rounds))
        if not args.no_s3 and not args.sealed_only:
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
