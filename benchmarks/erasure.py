"""Erasure coding throughput: the raw codec and our store's API side by side, in one run.

Prints one JSON object. For each profile (default 4+2 and 8+3):

* ``codec``: pyeclib (ISA-L Cauchy) alone on in-memory stripes: encode, and decode with 0, 1 and 2
  lost data fragments; ``isal_direct_*``: ISA-L called directly as the store does for full stripes
  (parity only, and rebuilding two lost data payloads in place).
* ``store``: the same bytes through ``ErasureCodedStore``: ``put`` of a new key (fragments written to
  k+m directories; ``durable=False`` is the page cache, ``put_durable`` adds one fsync per fragment
  file and manifest), ``get`` (returns new ``bytes``) and ``read_into`` (fills a reused buffer)
  with 0, 1 and 2 lost data-fragment files (repair off, so the figure is the degraded read itself).
* ``store_to_codec``: store GB/s divided by the matching codec GB/s (put/encode, get_lostN/decode_lostN),
  from wall clock (best run) and from CPU time.

Every figure is bytes of object per second, three ways: ``best`` (fastest of ``--repeat`` runs,
wall clock), ``median`` (wall clock) and ``cpu`` (bytes per CPU-second of this process, all its
threads, best run). The machine is shared, so wall clock includes waiting for other tenants; the
load average is recorded beside each profile. Baseline: 3-way replication of the same object
(write three files, read one), which stores 3.0x the data against EC's (k+m)/k.

    PYTHONPATH=src .venv/bin/python benchmarks/erasure.py [--size-mb 64] [--repeat 5] [--stripe-kb 1024]
"""

from __future__ import annotations

import argparse
import ctypes
import functools
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

GOAL_GBPS = 2.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rate(nbytes: int, fn: Callable[[], Any], repeat: int, setup: Callable[[], Any] | None = None) -> dict[str, float]:
    """GB/s of ``fn`` over ``repeat`` runs: best and median wall clock, and CPU time of the best run."""
    runs: list[tuple[float, float]] = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - t0, time.process_time() - c0))
    walls = [w for w, _ in runs]
    best_cpu = min(c for _, c in runs)
    return {
        "best": round(nbytes / min(walls) / 1e9, 3),
        "median": round(nbytes / statistics.median(walls) / 1e9, 3),
        "cpu": round(nbytes / max(best_cpu, 1e-9) / 1e9, 3),
    }


def load() -> float:
    return round(os.getloadavg()[0], 2)


def codec_numbers(k: int, m: int, stripe: int, data: bytes, repeat: int) -> dict[str, dict[str, float]]:
    codec = Codec(ErasureProfile(k=k, m=m, stripe_size=stripe))
    stripes = [data[o : o + stripe] for o in range(0, len(data), stripe)]
    encoded = [codec.encode(s) for s in stripes]
    out = {"encode": rate(len(data), lambda: [codec.encode(s) for s in stripes], repeat)}

    def decode_all(frag_sets: list[dict[int, bytes]]) -> None:
        for frags in frag_sets:
            codec.decode(frags)

    for lost in (0, 1, 2):
        frag_sets = [{i: f for i, f in enumerate(fr) if i >= lost} for fr in encoded]  # lose data fragments
        out[f"decode_lost{lost}"] = rate(len(data), functools.partial(decode_all, frag_sets), repeat)
    out.update(direct_numbers(codec, data, stripe, repeat))
    return out


def direct_numbers(codec: Codec, data: bytes, stripe: int, repeat: int) -> dict[str, dict[str, float]]:
    """ISA-L called directly (what the store uses for full stripes): parity of every stripe, and
    rebuilding two lost data payloads per stripe, over the same bytes, in place."""
    direct, payload = codec.direct, codec.direct_payload(stripe)
    if direct is None or payload is None or len(data) % stripe:
        return {}
    k, m = codec.profile.k, codec.profile.m
    base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0
    stripes = range(0, len(data), stripe)
    parity = ctypes.create_string_buffer(m * payload * len(stripes))
    at = ctypes.addressof(parity)

    def encode() -> None:
        for i, o in enumerate(stripes):
            direct.parity(base + o, payload, at + i * m * payload)

    out = {"isal_direct_encode": rate(len(data), encode, repeat)}
    scratch = ctypes.create_string_buffer(2 * payload)
    dst = [ctypes.addressof(scratch), ctypes.addressof(scratch) + payload]
    sources = [*range(2, k), k, k + 1]

    def rebuild() -> None:
        for i, o in enumerate(stripes):
            src = [base + o + d * payload for d in range(2, k)] + [at + (i * m + j) * payload for j in (0, 1)]
            direct.rebuild(sources, src, [0, 1], dst, payload)

    out["isal_direct_rebuild_lost2"] = rate(len(data), rebuild, repeat)
    return out


def store_numbers(k: int, m: int, stripe: int, data: bytes, repeat: int, root: Path) -> dict[str, dict[str, float]]:
    profile = ErasureProfile(k=k, m=m, stripe_size=stripe)
    out = {
        "put": put_rate(ErasureCodedStore.at_root(root / f"ec{k}{m}", profile, durable=False), data, repeat),
        "put_durable": put_rate(ErasureCodedStore.at_root(root / f"ec{k}{m}d", profile), data, repeat),
    }
    store = ErasureCodedStore.at_root(root / f"ec{k}{m}", profile, durable=False, repair_on_read=False)
    store.put("bench/obj", data)
    version = store.head("bench/obj").version
    buf = bytearray(len(data))  # a reused destination, as a checkpoint restore into pinned memory
    for lost in (0, 1, 2):
        if lost:
            store._frag_path(lost - 1, version).unlink()  # a data fragment: the read must decode
        got = store.get("bench/obj")
        assert got == data, "store returned different bytes"
        del got
        out[f"get_lost{lost}"] = rate(len(data), lambda: store.get("bench/obj"), repeat)
        out[f"read_into_lost{lost}"] = rate(len(data), lambda: store.read_into("bench/obj", buf), repeat)
    assert buf == data, "degraded read returned different bytes"
    return out


def put_rate(store: ErasureCodedStore, data: bytes, repeat: int) -> dict[str, float]:
    """Puts of a new key each run, as a checkpoint or dataset shard is written: removing an older
    version belongs to delete/overwrite, so the previous run's object is deleted untimed."""
    keys = iter(range(repeat))

    def clear() -> None:
        for key in list(store.walk_keys("bench")):
            store.delete(key)

    result = rate(len(data), lambda: store.put(f"bench/obj{next(keys)}", data), repeat, setup=clear)
    clear()
    return result


def ratios(codec: dict[str, dict[str, float]], store: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    pairs = {"put": "encode", **{f"get_lost{n}": f"decode_lost{n}" for n in (0, 1, 2)}}
    return {
        s: {how: round(store[s][how] / codec[c][how], 3) for how in ("best", "cpu")}
        for s, c in pairs.items()
    }


def small_object_numbers(root: Path, count: int) -> dict[str, Any]:
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


def replication_numbers(data: bytes, repeat: int, root: Path) -> dict[str, dict[str, float]]:
    dirs = [root / f"rep{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()

    def put() -> None:
        for d in dirs:
            tmp = d / "obj.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, d / "obj")

    return {"put": rate(len(data), put, repeat), "get": rate(len(data), lambda: (dirs[0] / "obj").read_bytes(), repeat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=64, help="object size (default 64 MiB)")
    ap.add_argument("--stripe-kb", type=int, default=1024, help="stripe size (default 1024 KiB, the store's default)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure; best, median and CPU are reported")
    ap.add_argument("--profiles", default="4+2,8+3", help="comma-separated k+m list (default 4+2,8+3)")
    ap.add_argument("--small-objects", type=int, default=200)
    args = ap.parse_args()
    try:
        profiles = [tuple(int(x) for x in p.split("+")) for p in args.profiles.split(",")]
        if any(len(p) != 2 for p in profiles):
            raise ValueError
    except ValueError:
        ap.error(f"--profiles {args.profiles!r}: use k+m pairs such as 4+2,8+3")
    data = os.urandom(args.size_mb << 20)
    stripe = args.stripe_kb << 10
    root = Path(tempfile.mkdtemp(prefix="mp-bench-ec-"))
    result: dict[str, Any] = {
        "benchmark": "erasure",
        "note": "GB/s of object bytes; best/median = wall clock over --repeat runs, cpu = bytes per CPU-second "
        "of this process (all threads) in its best run; decode_lostN/get_lostN lose N data fragments",
        "object_mb": args.size_mb,
        "stripe_kb": args.stripe_kb,
        "repeat": args.repeat,
        "ec_type": ErasureProfile().ec_type,
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "goal_gbps": GOAL_GBPS,
        "profiles": {},
    }
    try:
        log("replication baseline (3 copies)")
        result["replication_3x"] = {**replication_numbers(data, args.repeat, root), "storage_overhead": 3.0}
        for k, m in profiles:
            load0 = load()
            log(f"profile {k}+{m}: codec")
            codec = codec_numbers(k, m, stripe, data, args.repeat)
            log(f"profile {k}+{m}: store")
            store = store_numbers(k, m, stripe, data, args.repeat, root)
            result["profiles"][f"{k}+{m}"] = {
                "storage_overhead": round((k + m) / k, 3),
                "loadavg_1m": [load0, load()],
                "codec": codec,
                "store": store,
                "store_to_codec": ratios(codec, store),
            }
        log("small objects")
        result["small_objects_4k_4+2"] = small_object_numbers(root, args.small_objects)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    through_api = [
        p["store"][name][how]
        for p in result["profiles"].values()
        for name in ("put", "get_lost0", "get_lost1", "get_lost2")
        for how in ("best",)
    ]
    result["goal_met_wall_best"] = bool(through_api) and min(through_api) >= GOAL_GBPS
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
