"""Erasure coding throughput: the codec alone and through the ec:// store, against plain replication.

Prints one JSON object. For each profile (4+2, 8+3, 10+4): encode and decode GB/s of the pyeclib
codec with 0, 1 and 2 lost fragments, and put/get GB/s of whole objects through ErasureCodedStore
(fragments written to k+m directories; get with 0, 1, 2 fragment files deleted, repair off so the
number is the degraded read itself; ``get`` returns new bytes, ``read_into`` fills a reused
buffer). Baseline: 3-way replication of the same object (write three
files, read one), which stores 3.0x the data against EC's (k+m)/k.

    PYTHONPATH=src .venv/bin/python benchmarks/data_ec.py [--size-mb 128] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelplane.data.ecstore import ErasureCodedStore
from modelplane.data.erasure import Codec, ErasureProfile

PROFILES = [(4, 2), (8, 3), (10, 4)]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


CPU_GBPS: dict[int, float] = {}


def gbps(nbytes: int, fn: Callable[[], Any], repeat: int) -> float:
    """Wall-clock GB/s (median of runs); the CPU-time figure is kept aside because this machine is
    shared and wall time includes waiting for other tenants' processes."""
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU_GBPS[id(fn)] = nbytes / max(statistics.median(cpu), 1e-9) / 1e9
    return nbytes / statistics.median(times) / 1e9


def both(nbytes: int, fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    wall = gbps(nbytes, fn, repeat)
    return wall, CPU_GBPS.pop(id(fn))


def codec_numbers(k: int, m: int, stripe: int, data: bytes, repeat: int) -> dict[str, float]:
    codec = Codec(ErasureProfile(k=k, m=m, stripe_size=stripe))
    stripes = [data[o : o + stripe] for o in range(0, len(data), stripe)]
    encoded = [codec.encode(s) for s in stripes]
    out: dict[str, float] = {}
    out["encode_gbps"], out["encode_cpu_gbps"] = both(
        len(data), lambda: [codec.encode(s) for s in stripes], repeat
    )
    for lost in (0, 1, 2):
        frag_sets = [{i: f for i, f in enumerate(fr) if i >= lost} for fr in encoded]  # lose data fragments
        wall, cpu = both(len(data), lambda fs=frag_sets: [codec.decode(f) for f in fs], repeat)
        out[f"decode_lost{lost}_gbps"], out[f"decode_lost{lost}_cpu_gbps"] = wall, cpu
    return out


def store_numbers(k: int, m: int, stripe: int, data: bytes, repeat: int, root: Path) -> dict[str, float]:
    profile = ErasureProfile(k=k, m=m, stripe_size=stripe)
    store = ErasureCodedStore.at_root(root / f"ec{k}{m}", profile, durable=False, repair_on_read=False)
    out: dict[str, float] = {}
    out["put_gbps"], out["put_cpu_gbps"] = both(len(data), lambda: store.put("bench/obj", data), repeat)
    version = store.head("bench/obj").version
    buf = bytearray(len(data))  # a reused destination, as a checkpoint restore into pinned memory
    for lost in (0, 1, 2):
        if lost:
            store._frag_path(lost - 1, version).unlink()
        wall, cpu = both(len(data), lambda: store.get("bench/obj"), repeat)
        out[f"get_lost{lost}_gbps"], out[f"get_lost{lost}_cpu_gbps"] = wall, cpu
        wall, cpu = both(len(data), lambda: store.read_into("bench/obj", buf), repeat)
        out[f"read_into_lost{lost}_gbps"], out[f"read_into_lost{lost}_cpu_gbps"] = wall, cpu
    assert buf == data, "degraded read returned different bytes"
    return out


def small_object_numbers(root: Path, count: int) -> dict[str, float]:
    """Per-object cost of 4 KiB objects at 4+2, durable (fsync) as by default: fixed costs dominate."""
    store = ErasureCodedStore.at_root(root / "small", ErasureProfile())
    payload = os.urandom(4096)
    t0 = time.perf_counter()
    for i in range(count):
        store.put(f"small/{i}", payload)
    put_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(count):
        store.get(f"small/{i}")
    get_s = time.perf_counter() - t0
    return {"objects": count, "durable": True, "puts_per_s": round(count / put_s, 1),
            "gets_per_s": round(count / get_s, 1)}


def replication_numbers(data: bytes, repeat: int, root: Path) -> dict[str, float]:
    dirs = [root / f"rep{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()

    def put() -> None:
        for d in dirs:
            tmp = d / "obj.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, d / "obj")

    out: dict[str, float] = {}
    out["put_gbps"], out["put_cpu_gbps"] = both(len(data), put, repeat)
    out["get_gbps"], out["get_cpu_gbps"] = both(len(data), lambda: (dirs[0] / "obj").read_bytes(), repeat)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=int, default=128)
    ap.add_argument("--stripe-kb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--small-objects", type=int, default=200)
    args = ap.parse_args()
    data = os.urandom(args.size_mb << 20)
    stripe = args.stripe_kb << 10
    root = Path(tempfile.mkdtemp(prefix="mp-bench-ec-"))
    result: dict[str, Any] = {
        "note": "*_gbps = wall clock, *_cpu_gbps = bytes per CPU-second of this "
        "process (the machine is shared); decode_lostN drops N data fragments",
        "object_mb": args.size_mb,
        "stripe_kb": args.stripe_kb,
        "repeat": args.repeat,
        "ec_type": ErasureProfile().ec_type,
        "durable": False,
        "profiles": {},
    }
    try:
        log("replication baseline (3 copies)")
        rep = replication_numbers(data, args.repeat, root)
        result["replication_3x"] = {**rep, "storage_overhead": 3.0}
        for k, m in PROFILES:
            log(f"profile {k}+{m}: codec")
            codec = codec_numbers(k, m, stripe, data, args.repeat)
            log(f"profile {k}+{m}: store")
            store = store_numbers(k, m, stripe, data, args.repeat, root)
            result["profiles"][f"{k}+{m}"] = {
                "storage_overhead": round((k + m) / k, 3),
                "codec": {n: round(v, 3) for n, v in codec.items()},
                "store": {n: round(v, 3) for n, v in store.items()},
                "store_vs_replication": {
                    "put_ratio": round(store["put_gbps"] / rep["put_gbps"], 3),
                    "get_ratio": round(store["get_lost0_gbps"] / rep["get_gbps"], 3),
                },
            }
        result["replication_3x"] = {n: round(v, 3) for n, v in result["replication_3x"].items()}
        log("small objects")
        result["small_objects_4k_4+2"] = small_object_numbers(root, args.small_objects)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["loadavg_1m_at_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
