"""Checkpoint cost: blocking window of our asynchronous save vs our synchronous save vs plain
``torch.save``, write throughput vs the raw sequential write bandwidth of the same disk (measured
in the same run), and restore time (ours with checksum verification, ours without, torch.load).

"Default" is the manager's default (overlapped staging with an optimizer tracked, written from the
live tensors): the write streams parameters and optimizer state straight from training memory
beside the next forward/backward, and the optimizer step's pre-hook copies into the host buffer
only what the write has not read yet; its blocking window is the call itself plus that copy.
"Overlapped copy" is the previous default (``write_from_live=False``): the whole state is copied
beside forward/backward, the step waits for the copy, the write follows it. "Inline" forces the
copy into ``save`` (``overlap_staging=False``); the write streams the buffer behind the copy.
With the state on a GPU (``--device cuda``) the default copies it to pinned host memory first (the
write cannot read device memory), as "overlapped copy" does. Every mode checksums the data file in
the same pass: ``--checksum`` (default: the manager's, XXH3-128 where xxhash is installed, one
in-order stream on a checksum thread; else CRC-32C or zlib's CRC-32 in pieces on several threads).

Checksum rows (``--compare-checksums``, default ``crc32c@threads,xxh3-128@io``): the default
mode again with another algorithm and/or place for the checksum (``@io``: one stream on the I/O
thread after each batch's write; ``@threads``: pieces on checksum threads beside the write), saved
in the same interleaved rounds as the default, each right after a raw baseline of its own, in an
order that rotates every round; ``checksums`` in the output holds their medians beside the
default's (``ratio_*_to_adjacent_raw``, as for the default).

Raw disk bandwidth, the physical limit: each round writes one file of exactly the checkpoint's
size in 64 MiB sequential writes and fsyncs it once, as our writer does (one data file per rank,
one fsync per file), both through the page cache and with O_DIRECT; the faster of the two medians
is the limit the ratio is taken against (our writer uses O_DIRECT where the file system allows it,
so comparing it against buffered writes alone would flatter it). Our throughput counts the
checkpoint's state bytes over the time from the ``save`` call (snapshot included) until the
manifest is durable, measured with nothing else running (``save`` then ``wait``): the headline
``ratio_async_throughput_to_raw_disk`` is the default mode's. ``*_while_training`` repeats the
default save with one training step beside it (forward, backward, optimizer step), which on this
CPU-only machine shares the two cores with the write. Per-round ratios pair each save with the
baseline of its round. Inline saves are bound by the memory copy when it is slower than the disk
(``snapshot_copy_gb_s``).

"Previous writer" is the default mode with the writer as it was before the I/O thread and the
grouped fsync (``io_queue=0, group_fsync=False``: each 64 MiB batch written inline between the
Python work that gathers the next, and the data file, ``.metadata`` and extras each fsynced on
their own); it is saved right beside the default in every round, the two in alternating order,
so both see the same disk and the same load. On a shared machine single saves swing by 2x: read
the medians of the per-round ratios (each save against its own round's raw baseline).

Model: a stack of Linear layers (default 100M parameters, 400 MB fp32) plus Adam state (2x), so
about 1.2 GB of state. Every write is fsynced (raw baselines included) unless --no-fsync. The load
average before and after the run is in the output: timings on a shared machine drift with it.

    PYTHONPATH=src .venv/bin/python benchmarks/checkpoint.py [--params-m 100] [--device cpu|cuda]
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(params_m: int, device: str):  # type: ignore[no-untyped-def]
    import torch
    from torch import nn

    width = 2048
    layers = max(1, round(params_m * 1e6 / (width * width + width)))
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(8, width, device=device)
    model(x).sum().backward()
    opt.step()  # materialise Adam's state
    opt.zero_grad(set_to_none=True)
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    nbytes += sum(
        v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v)
    )
    return model, opt, nbytes


def train_step(model, opt, device: str) -> None:  # type: ignore[no-untyped-def]
    """One real step (forward, backward, Adam): training goes on between and during saves."""
    import torch

    x = torch.randn(4, model[0].in_features, device=device)
    model(x).square().mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


_BLOCK = None


def raw_write(path: Path, nbytes: int, fsync: bool, direct: bool) -> float | None:
    """Sequential write of nbytes in 64 MiB blocks from a page-aligned buffer, one fsync at the
    end: the physical limit of this disk from Python, buffered or O_DIRECT (None where the file
    system refuses O_DIRECT). Measured every round, beside the saves, because the shared disk's
    speed drifts."""
    import mmap

    global _BLOCK
    if _BLOCK is None:
        _BLOCK = mmap.mmap(-1, 64 << 20)
        _BLOCK.write(os.urandom(64 << 20))
    block = memoryview(_BLOCK)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if direct:
        if not hasattr(os, "O_DIRECT"):
            return None
        flags |= os.O_DIRECT
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        return None
    t0 = time.perf_counter()
    try:
        left = nbytes
        while left > 0:
            n = min(left, len(block))
            if direct:
                n = (n + 4095) // 4096 * 4096
            os.write(fd, block[:n])
            left -= n
        if fsync:
            os.fsync(fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    path.unlink()
    return nbytes / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params-m", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    ap.add_argument("--no-fsync", action="store_true")
    ap.add_argument("--checksum", default="auto", help="the default rows' algorithm (auto: the manager's)")
    ap.add_argument(
        "--compare-checksums",
        default="crc32c@threads,xxh3-128@io",
        help="extra default-mode rows, ALGORITHM@io|threads, comma-separated ('' for none)",
    )
    a = ap.parse_args()
    import torch

    from modelplane.train.checkpoint import CheckpointManager
    from modelplane.train.manifest import CHECKSUMS, check_algorithm

    fsync = not a.no_fsync
    root = Path(a.dir or tempfile.mkdtemp(prefix="mp-ckpt-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    model, opt, nbytes = build(a.params_m, a.device)
    log(f"state {nbytes / 1e6:.0f} MB on {a.device}, writing under {root}")

    sync_mgr = CheckpointManager(str(root / "sync"), keep_last=2, asynchronous=False, fsync=fsync).track(
        model=model, optimizer=opt
    )
    # "async": the snapshot is copied inline in save(); "overlapped" is the manager's default (the
    # copy runs beside the next forward/backward; the optimizer step waits for it).
    async_mgr = CheckpointManager(
        str(root / "async"), keep_last=2, asynchronous=True, overlap_staging=False, fsync=fsync
    ).track(model=model, optimizer=opt)
    overlap_mgr = CheckpointManager(
        str(root / "overlap"), keep_last=2, asynchronous=True, fsync=fsync, checksum=a.checksum
    ).track(model=model, optimizer=opt)
    copy_mgr = CheckpointManager(
        str(root / "copy"), keep_last=2, asynchronous=True, write_from_live=False, fsync=fsync
    ).track(model=model, optimizer=opt)
    prev_mgr = CheckpointManager(
        str(root / "previous"), keep_last=2, asynchronous=True, fsync=fsync, io_queue=0, group_fsync=False
    ).track(model=model, optimizer=opt)
    default_sum = f"{overlap_mgr.checksum}@{'io' if overlap_mgr.checksum_on_io else 'threads'}"
    compare: dict[str, CheckpointManager] = {}
    for spec in filter(None, (x.strip() for x in a.compare_checksums.split(","))):
        alg, _, where = spec.partition("@")
        if where not in ("io", "threads"):
            raise SystemExit(f"--compare-checksums {spec!r}: write ALGORITHM@io or ALGORITHM@threads")
        if alg not in CHECKSUMS:
            raise SystemExit(
                f"--compare-checksums {spec!r}: unknown algorithm, use one of {sorted(CHECKSUMS)}"
            )
        try:
            check_algorithm(alg)
        except Exception as exc:  # a missing optional package: that row is left out
            log(f"checksum row {spec} left out: {exc}")
            continue
        if spec != default_sum:
            compare[spec] = CheckpointManager(
                str(root / f"sum-{alg}-{where}"),
                keep_last=2,
                asynchronous=True,
                fsync=fsync,
                checksum=alg,
                checksum_on_io=where == "io",
            ).track(model=model, optimizer=opt)
    compare_ratio: dict[str, list[float]] = {k: [] for k in compare}
    compare_totals: dict[str, list[float]] = {k: [] for k in compare}
    log(f"default checksum {default_sum}; compared: {sorted(compare) or 'none'}")

    def torch_save(i: int) -> float:
        t0 = time.perf_counter()
        with open(root / f"torch-{i}.pt", "wb") as fh:
            torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        return time.perf_counter() - t0

    # the first async save allocates DCP's staging buffers: reported apart from the steady state
    first_blocking = async_mgr.save(0).blocking_s
    async_mgr.wait()
    overlap_mgr.save(0)
    overlap_mgr.wait()
    copy_mgr.save(0)
    copy_mgr.wait()
    prev_mgr.save(0)
    prev_mgr.wait()
    for cmp_mgr in compare.values():
        cmp_mgr.save(0)
        cmp_mgr.wait()
    load_before = os.getloadavg()
    ts_times: list[float] = []
    sync_times: list[float] = []
    blocking: list[float] = []
    totals: list[float] = []
    overlap_blocking: list[float] = []
    default_totals: list[float] = []
    training_totals: list[float] = []
    copy_totals: list[float] = []
    copy_training_totals: list[float] = []
    copy_blocking: list[float] = []
    step_copy: list[float] = []
    raw_buffered: list[float] = []
    raw_direct: list[float] = []
    step_plain: list[float] = []
    step_overlapped: list[float] = []
    prev_totals: list[float] = []
    prev_ratio: list[float] = []  # previous writer against a raw baseline taken right before it
    new_ratio: list[float] = []  # the default against a raw baseline taken right before it
    load_rounds: list[float] = []
    for i in range(a.repeats):  # interleaved, so disk-cache drift on a shared machine hits all alike
        bw = raw_write(root / "raw.bin", nbytes, fsync, direct=False)
        if bw:
            raw_buffered.append(bw)
        bw = raw_write(root / "raw.bin", nbytes, fsync, direct=True)
        if bw:
            raw_direct.append(bw)
        t0 = time.perf_counter()
        train_step(model, opt, a.device)
        step_plain.append(time.perf_counter() - t0)
        ts_times.append(torch_save(i % 2))
        train_step(model, opt, a.device)
        sync_times.append(sync_mgr.save(i + 1).blocking_s)
        train_step(model, opt, a.device)
        rec = async_mgr.save(i + 1)
        async_mgr.wait()
        blocking.append(rec.blocking_s)
        totals.append(rec.total_s or 0.0)
        # the default, alone (save call until the manifest is durable), and the previous writer,
        # each right after a raw baseline of its own, in alternating order
        # (the checksum rows join this rotation: each round starts one further along it)
        order = ["new", "prev", *compare]
        k = i % len(order)
        for which in order[k:] + order[:k]:
            mgr = {"new": overlap_mgr, "prev": prev_mgr}.get(which) or compare[which]
            bw = raw_write(root / "raw.bin", nbytes, fsync, direct=True) or raw_write(
                root / "raw.bin", nbytes, fsync, direct=False
            )
            rec3 = mgr.save(10 * i + 2)
            mgr.wait()
            total = rec3.total_s or 0.0
            if which in compare:
                compare_totals[which].append(total)
                if bw:
                    compare_ratio[which].append(nbytes / (total or 1.0) / bw)
                continue
            (default_totals if which == "new" else prev_totals).append(total)
            if bw:
                (new_ratio if which == "new" else prev_ratio).append(nbytes / (total or 1.0) / bw)
        load_rounds.append(os.getloadavg()[0])
        rec4 = copy_mgr.save(10 * i + 2)
        copy_mgr.wait()
        copy_totals.append(rec4.total_s or 0.0)
        # the default beside a training step: forward/backward overlap the write; the step's
        # pre-hook copies what is not written yet
        for mgr, steps, blocks, commits in (
            (overlap_mgr, step_overlapped, overlap_blocking, training_totals),
            (copy_mgr, step_copy, copy_blocking, copy_training_totals),
        ):
            t0 = time.perf_counter()
            rec = mgr.save(10 * i + 3)
            train_step(model, opt, a.device)
            steps.append(time.perf_counter() - t0)
            mgr.wait()
            blocks.append(rec.blocking_s)
            commits.append(rec.total_s or 0.0)
        log(
            f"round {i}: raw {max(raw_buffered[-1:] + raw_direct[-1:]) / 1e9:.2f} GB/s, torch.save "
            f"{ts_times[-1]:.2f} s, sync {sync_times[-1]:.2f} s, inline blocking {blocking[-1]:.3f} s / commit "
            f"{totals[-1]:.2f} s, default commit {default_totals[-1]:.2f} s (overlapped copy "
            f"{copy_totals[-1]:.2f} s), beside a step: default blocking {overlap_blocking[-1]:.3f} s / "
            f"commit {training_totals[-1]:.2f} s, overlapped copy blocking {copy_blocking[-1]:.3f} s / commit "
            f"{copy_training_totals[-1]:.2f} s; default/raw {new_ratio[-1]:.3f} vs previous writer "
            f"{prev_ratio[-1]:.3f}"
            + "".join(f", {k} {v[-1]:.3f}" for k, v in compare_ratio.items() if v)
            + f" (load {load_rounds[-1]:.1f})"
        )
    sync_mgr.close()
    for cmp_mgr in compare.values():
        cmp_mgr.close()
    prev_mgr.close()
    overlap_mgr.close()
    copy_mgr.close()
    raw_buffered_bw = statistics.median(raw_buffered)
    raw_direct_bw = statistics.median(raw_direct) if raw_direct else None
    raw_bw = max(raw_buffered_bw, raw_direct_bw or 0.0)

    # training goes on during an asynchronous save: count the steps it gets done meanwhile
    train_step(model, opt, a.device)
    rec = async_mgr.save(a.repeats + 1)
    saved = [p.detach().clone() for p in model.parameters()]
    steps_during = 0
    while async_mgr._pending is not None and not async_mgr._pending.done():
        train_step(model, opt, a.device)
        steps_during += 1
    async_mgr.wait()
    async_mgr.close()
    overlapped_commit = rec.total_s or 0.0

    # restore
    def restore(verify: bool) -> float:
        m2, o2, _ = build(a.params_m, a.device)
        mgr = CheckpointManager(str(root / "async"), verify_on_resume=verify).track(model=m2, optimizer=o2)
        t0 = time.perf_counter()
        mgr.resume()
        dt = time.perf_counter() - t0
        mgr.close()
        ok = all(torch.equal(p, q) for p, q in zip(saved, m2.parameters(), strict=True))
        if not ok:
            raise SystemExit("restored parameters differ from the saved ones")
        return dt

    restore_verified = restore(True)
    restore_unverified = restore(False)
    m3, o3, _ = build(a.params_m, a.device)
    t0 = time.perf_counter()
    state = torch.load(root / "torch-0.pt", map_location=a.device)
    m3.load_state_dict(state["model"])
    o3.load_state_dict(state["optim"])
    restore_torch = time.perf_counter() - t0
    log(
        f"restore ours {restore_verified:.2f} s (verified) / {restore_unverified:.2f} s, torch.load {restore_torch:.2f} s"
    )

    med = statistics.median
    raw_rounds = [max(b, d) for b, d in zip(raw_buffered, raw_direct or raw_buffered, strict=False)]
    round_tput = [nbytes / t / r for t, r in zip(default_totals, raw_rounds, strict=False)]
    round_inline = [nbytes / t / r for t, r in zip(totals, raw_rounds, strict=False)]

    def tput(times: list[float]) -> float:
        return float(nbytes / med(times))

    round_block = [b / t for b, t in zip(blocking, ts_times, strict=True)]
    out = {
        "benchmark": "checkpoint",
        "device": a.device,
        "state_mb": round(nbytes / 1e6, 1),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "fsync": fsync,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "raw_write_gb_s": round(raw_bw / 1e9, 3),
        "raw_write_buffered_gb_s": round(raw_buffered_bw / 1e9, 3),
        "raw_write_direct_gb_s": None if raw_direct_bw is None else round(raw_direct_bw / 1e9, 3),
        "torch_save_each_s": [round(x, 3) for x in ts_times],
        "torch_save_s": round(med(ts_times), 3),
        "sync_save_s": round(med(sync_times), 3),
        "default_mode": "overlapped, written from the live tensors",
        # the default mode: blocking window beside a training step, commit alone and beside it
        "overlap_staging_blocking_s": round(med(overlap_blocking), 4),
        "ratio_overlap_blocking_to_torch_save": round(med(overlap_blocking) / med(ts_times), 4),
        "default_commit_s": round(med(default_totals), 3),
        "default_commit_each_s": [round(x, 3) for x in default_totals],
        "async_write_gb_s": round(tput(default_totals) / 1e9, 3),
        "ratio_async_throughput_to_raw_disk": round(tput(default_totals) / raw_bw, 3),
        "ratio_async_throughput_to_raw_disk_per_round": [round(x, 3) for x in round_tput],
        # robust to drift: each save against the raw baseline taken right before it
        "ratio_async_throughput_to_adjacent_raw_median": round(med(new_ratio), 3),
        "ratio_async_throughput_to_adjacent_raw_each": [round(x, 3) for x in new_ratio],
        "previous_writer_commit_s": round(med(prev_totals), 3),
        "ratio_previous_writer_throughput_to_adjacent_raw_median": round(med(prev_ratio), 3),
        "ratio_previous_writer_throughput_to_adjacent_raw_each": [round(x, 3) for x in prev_ratio],
        "load_avg_1m_each_round": [round(x, 2) for x in load_rounds],
        "ratio_async_throughput_to_raw_buffered": round(tput(default_totals) / raw_buffered_bw, 3),
        "default_commit_while_training_s": round(med(training_totals), 3),
        "ratio_throughput_while_training_to_raw_disk": round(tput(training_totals) / raw_bw, 3),
        "train_step_s": round(med(step_plain), 4),
        "train_step_with_overlapped_save_s": round(med(step_overlapped), 4),
        # the previous default: the whole state copied beside forward/backward, then written
        "copy_overlap_blocking_s": round(med(copy_blocking), 4),
        "copy_overlap_commit_s": round(med(copy_totals), 3),
        "ratio_copy_overlap_throughput_to_raw_disk": round(tput(copy_totals) / raw_bw, 3),
        "copy_overlap_commit_while_training_s": round(med(copy_training_totals), 3),
        "train_step_with_copy_overlap_save_s": round(med(step_copy), 4),
        # inline: the copy inside save(), the write streaming behind it
        "async_blocking_each_s": [round(x, 4) for x in blocking],
        "async_blocking_s": round(med(blocking), 4),
        "async_first_blocking_s": round(first_blocking, 4),
        "inline_commit_s": round(med(totals), 3),
        "ratio_inline_throughput_to_raw_disk": round(tput(totals) / raw_bw, 3),
        "ratio_inline_throughput_to_raw_disk_per_round": [round(x, 3) for x in round_inline],
        "snapshot_copy_gb_s": round(nbytes / med(blocking) / 1e9, 3),
        "ratio_async_blocking_to_torch_save": round(med(blocking) / med(ts_times), 4),
        "ratio_async_blocking_to_torch_save_per_round": [round(x, 4) for x in round_block],
        "ratio_async_blocking_to_sync_save": round(med(blocking) / med(sync_times), 4),
        "train_steps_during_async_save": steps_during,
        "async_commit_while_training_s": round(overlapped_commit, 3),
        "ratio_sync_save_to_torch_save": round(med(sync_times) / med(ts_times), 3),
        "ratio_sync_throughput_to_raw_disk": round(nbytes / med(sync_times) / raw_bw, 3),
        "restore_verified_s": round(restore_verified, 3),
        "restore_unverified_s": round(restore_unverified, 3),
        "restore_torch_load_s": round(restore_torch, 3),
        "ratio_restore_verified_to_torch_load": round(restore_verified / restore_torch, 3),
        "repeats": a.repeats,
        # the checksum: the default rows' and the compared rows' (same rounds, adjacent raw baselines)
        "checksum": default_sum,
        "checksums": {
            default_sum: {
                "commit_s": round(med(default_totals), 3),
                "write_gb_s": round(tput(default_totals) / 1e9, 3),
                "ratio_to_adjacent_raw_median": round(med(new_ratio), 3),
                "ratio_to_adjacent_raw_each": [round(x, 3) for x in new_ratio],
            },
            **{
                k: {
                    "commit_s": round(med(compare_totals[k]), 3),
                    "write_gb_s": round(tput(compare_totals[k]) / 1e9, 3),
                    "ratio_to_adjacent_raw_median": round(med(v), 3) if v else None,
                    "ratio_to_adjacent_raw_each": [round(x, 3) for x in v],
                }
                for k, v in compare_ratio.items()
            },
        },
    }
    if not a.dir:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
