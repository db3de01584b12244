"""Embedded erasure-coded object store over k+m directories (one per disk).

Layout on every disk ``d`` (fragment index == disk index)::

    d/store.json                      profile and store id, checked at open (catches swapped disks)
    d/frags/<vv>/<version>.<index>    fragment file: the index-th fragment of every stripe, back to back
    d/meta/<key>.~mf                  manifest (JSON) of the committed version of <key>, on every disk

Why this shape: fragments of a new version go to fresh names nobody references, so writing them can
never damage the committed object; the manifest, replaced with ``os.replace`` on each disk after
every fragment is durable, is the single commit point. A reader picks the newest valid manifest it
finds, which only ever names complete fragments: an object is visible whole or not at all. Each
stripe fragment carries a CRC32C in the manifest, so bit rot and truncation are caught before
pyeclib sees the bytes, and any k intact fragments rebuild the stripe.

Speed (benchmarks/erasure.py): full stripes are coded by ISA-L directly (``erasure.DirectEncoder``,
verified byte-identical to pyeclib): data fragments are written straight from the caller's bytes
and only parity is computed; the calling thread codes and CRCs each batch while cached, and a
thread pool writes earlier batches with one ``pwritev`` per disk (GIL released), so coding and the
kernel's copy into the page cache overlap. Reads take a fast path when the k data fragments are
healthy: one ``preadv`` per disk and batch lands the payloads directly in the output buffer, the
reading thread CRCs them in place, and no decoder runs; a lost or corrupt data payload is rebuilt
by ISA-L into the output from parity, or (partial stripes, other codes) by pyeclib. Durability: with ``durable=True`` (default) each fragment
file and manifest is fsynced once, and its directory after it, before the manifest on that disk is
replaced; with ``durable=False`` nothing is fsynced, which keeps atomicity against a crashed or
killed process (the page cache survives it) but not against power loss.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from modelplane.data.erasure import Codec, ErasureProfile, stripe_views
from modelplane.data.errors import DataError, ObjectNotFound, Unrecoverable
from modelplane.data.tfrecord import _crc32c

T = TypeVar("T")
MANIFEST_SUFFIX = ".~mf"
FORMAT = 1
ORPHAN_GRACE_S = 3600.0
# Stripe bytes per batch of parallel fragment I/O: large enough for few big syscalls, small enough
# that two batches in flight stay in glibc's reused heap (erasure.tune_allocator).
BATCH_BYTES = 8 << 20
_IOV_MAX = 1024
_ODD_LAYOUT = -1  # marks a stripe whose intact fragment is not laid out as the fast path assumes
_HUGE = 2 << 20
_MADV_HUGEPAGE = 14


def _crc(data: Any) -> int:
    return _crc32c()(data)


def _crc_extend(crc: int, data: Any) -> int:
    import google_crc32c

    return google_crc32c.extend(crc, data)  # type: ignore[no-any-return]


def _crc_at(crc: int, address: int, n: int) -> int:
    """CRC32C of ``n`` bytes at ``address``, extending ``crc``.

    Why: google-crc32c's Python functions hold the GIL for anything but ``bytes`` of 1 MiB and
    more, so fragment CRCs computed in the I/O threads would run one at a time. Its wheel ships
    libcrc32c, whose C entry point ctypes calls with the GIL released; that library is used when it
    loads and agrees with google-crc32c on a probe, and google-crc32c itself otherwise.
    """
    fn = _crc_lib()
    if fn is not None:
        return fn(crc, address, n)  # type: ignore[no-any-return]
    return _crc_extend(crc, (ctypes.c_char * n).from_address(address))


def _crc_bytes(crc: int, data: bytes | bytearray) -> int:
    if not data:
        return crc
    if isinstance(data, bytes):
        return _crc_at(crc, _address_of_bytes(data), len(data))
    return _crc_at(crc, ctypes.addressof((ctypes.c_char * len(data)).from_buffer(data)), len(data))


def _address_of_bytes(data: bytes) -> int:
    address = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    assert address is not None
    return address


@functools.cache
def _crc_lib() -> Any:
    import glob

    import google_crc32c

    here = Path(google_crc32c.__file__).parent
    for path in sorted(glob.glob(str(here.parent / "google_crc32c.libs" / "libcrc32c*.so*"))):
        try:
            fn = ctypes.CDLL(path)["crc32c_extend"]
        except (OSError, AttributeError):
            continue
        fn.argtypes = (ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t)
        fn.restype = ctypes.c_uint32
        probe = b"modelplane crc32c probe" * 3
        if fn(0, _address_of_bytes(probe), len(probe)) == google_crc32c.value(probe):
            return fn
    return None


def normalize_key(key: str) -> str:
    """Validate an object key: '/'-separated, no empty, '.', '..' or reserved components."""
    parts = [p for p in key.strip("/").split("/")]
    if not parts or parts == [""]:
        raise DataError("an object key must not be empty.", hint="Use a path such as 'datasets/x/part-0'.")
    for part in parts:
        if part in ("", ".", "..") or part.endswith(MANIFEST_SUFFIX) or part.startswith(".tmp-"):
            raise DataError(
                f"object key {key!r} has an invalid component {part!r}.",
                hint=f"Use non-empty components other than '.' and '..', not ending in {MANIFEST_SUFFIX!r} "
                "and not starting with '.tmp-'.",
                field="path",
            )
    return "/".join(parts)


@dataclass(frozen=True)
class Manifest:
    """What a committed object is: its version, size, layout and per-fragment stripe CRCs."""

    key: str
    version: str
    generation: int
    size: int
    profile: ErasureProfile
    stripes: int
    frag_size: int
    last_frag_size: int
    crcs: tuple[tuple[int, ...], ...]  # crcs[fragment_index][stripe]
    metadata: dict[str, Any] = field(default_factory=dict)

    def fragment_length(self, stripe: int) -> int:
        return self.last_frag_size if stripe == self.stripes - 1 else self.frag_size

    def fragment_file_size(self) -> int:
        if self.stripes == 0:
            return 0
        return self.frag_size * (self.stripes - 1) + self.last_frag_size

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT,
            "key": self.key,
            "version": self.version,
            "generation": self.generation,
            "size": self.size,
            "profile": self.profile.to_dict(),
            "stripes": self.stripes,
            "frag_size": self.frag_size,
            "last_frag_size": self.last_frag_size,
            "crcs": [list(c) for c in self.crcs],
            "metadata": self.metadata,
        }
        raw = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return json.dumps({"body": body, "crc": _crc(raw.encode())}, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest | None:
        """Parse a manifest, or None when it is damaged (its own CRC does not match)."""
        try:
            outer = json.loads(data)
            body = outer["body"]
            raw = json.dumps(body, sort_keys=True, separators=(",", ":"))
            if _crc(raw.encode()) != outer["crc"] or body["format"] != FORMAT:
                return None
            return cls(
                key=body["key"],
                version=body["version"],
                generation=body["generation"],
                size=body["size"],
                profile=ErasureProfile(**body["profile"]),
                stripes=body["stripes"],
                frag_size=body["frag_size"],
                last_frag_size=body["last_frag_size"],
                crcs=tuple(tuple(c) for c in body["crcs"]),
                metadata=body.get("metadata", {}),
            )
        except (ValueError, KeyError, TypeError, DataError):
            return None


@dataclass
class ReadReport:
    """What a read found: fragment indices that were missing or corrupt (and repaired if asked)."""

    damaged: set[int] = field(default_factory=set)
    stale_manifests: set[int] = field(default_factory=set)
    repaired: bool = False
    error: str = ""


class ErasureCodedStore:
    """Put/get/delete/list of whole objects and byte ranges over k+m directories."""

    def __init__(
        self,
        disks: Sequence[str | os.PathLike[str]],
        profile: ErasureProfile | None = None,
        *,
        durable: bool = True,
        repair_on_read: bool = True,
    ) -> None:
        self.profile = profile or ErasureProfile()
        if len(disks) != self.profile.n:
            raise DataError(
                f"{len(disks)} disk directories given for a {self.profile.k}+{self.profile.m} profile, "
                f"which needs exactly {self.profile.n} (one fragment per disk).",
                hint="Pass k+m directories, or a single root and let the store create disk0..diskN under it.",
                field="disks",
            )
        self.disks = [Path(d) for d in disks]
        if len({d.resolve() for d in self.disks}) != len(self.disks):
            raise DataError("the same directory is listed twice as a disk.", field="disks",
                            hint="Give each fragment its own directory, ideally on separate devices.")
        self.codec = Codec(self.profile)
        self.durable = durable
        self.repair_on_read = repair_on_read
        self.store_id = self._open_disks()

    @classmethod
    def at_root(cls, root: str | os.PathLike[str], profile: ErasureProfile | None = None,
                **kwargs: Any) -> ErasureCodedStore:
        """A store whose disks are ``root/disk0 .. root/disk{n-1}`` (single-device convenience)."""
        p = profile or ErasureProfile()
        return cls([Path(root) / f"disk{i}" for i in range(p.n)], p, **kwargs)

    # ---- disks -----------------------------------------------------------------------------------

    def _open_disks(self) -> str:
        found: dict[int, dict[str, Any]] = {}
        for i, disk in enumerate(self.disks):
            marker = disk / "store.json"
            if marker.exists():
                info = json.loads(marker.read_text())
                if info.get("index") != i:
                    raise DataError(
                        f"disk {disk} holds fragment index {info.get('index')}, but is listed at position {i}.",
                        hint="List the disk directories in their original order.",
                        field="disks",
                    )
                # Stripe size is per object (kept in each manifest); k, m and the code are per store.
                prof = {k: info.get(k) for k in ("k", "m", "ec_type")}
                want = {k: getattr(self.profile, k) for k in ("k", "m", "ec_type")}
                if prof != want:
                    raise DataError(
                        f"disk {disk} was created with profile {prof}, not {want}.",
                        hint="Open the store with the profile it was created with.",
                        field="disks",
                    )
                found[i] = info
        ids = {info["store_id"] for info in found.values()}
        if len(ids) > 1:
            raise DataError(f"the disks belong to different stores ({sorted(ids)}).", field="disks",
                            hint="List only the directories of one store.")
        store_id = ids.pop() if ids else uuid.uuid4().hex
        for i, disk in enumerate(self.disks):
            if i not in found:  # new store, or a replaced (empty) disk that repair will refill
                (disk / "meta").mkdir(parents=True, exist_ok=True)
                (disk / "frags").mkdir(parents=True, exist_ok=True)
                body = {"store_id": store_id, "index": i, "k": self.profile.k, "m": self.profile.m,
                        "ec_type": self.profile.ec_type}
                self._atomic_write(disk / "store.json", json.dumps(body).encode())
        return store_id

    def _manifest_path(self, disk: int, key: str) -> Path:
        return self.disks[disk] / "meta" / (key + MANIFEST_SUFFIX)

    def _frag_path(self, disk: int, version: str) -> Path:
        return self.disks[disk] / "frags" / version[:2] / f"{version}.{disk}"

    def _atomic_write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if self.durable:
            _fsync_dir(path.parent)

    # ---- write -----------------------------------------------------------------------------------

    def writer(self, key: str, metadata: dict[str, Any] | None = None) -> ObjectWriter:
        return ObjectWriter(self, normalize_key(key), metadata or {})

    def put(self, key: str, data: bytes, metadata: dict[str, Any] | None = None) -> Manifest:
        w = self.writer(key, metadata)
        try:
            w.write(data)
            return w.commit()
        except BaseException:
            w.abort()
            raise

    # ---- read ------------------------------------------------------------------------------------

    def head(self, key: str) -> Manifest:
        manifest, _ = self._newest_manifest(normalize_key(key))
        return manifest

    def _newest_manifest(self, key: str) -> tuple[Manifest, set[int]]:
        seen: list[tuple[int, Manifest | None]] = []
        for i in range(self.profile.n):
            try:
                raw = self._manifest_path(i, key).read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                seen.append((i, None))
                continue
            except OSError:
                seen.append((i, None))
                continue
            seen.append((i, Manifest.from_json(raw)))
        good = [m for _, m in seen if m is not None]
        if not good:
            raise ObjectNotFound(f"no object at {key!r}.", hint="Check the path with ls.", field="path")
        newest = max(good, key=lambda m: (m.generation, m.version))
        stale = {i for i, m in seen if m is None or m.version != newest.version}
        return newest, stale

    def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        data, _ = self.get_with_report(key, start, end)
        return data

    def get_with_report(self, key: str, start: int = 0, end: int | None = None) -> tuple[bytes, ReadReport]:
        """Bytes [start, end) of the committed object, rebuilt from any k intact fragments."""
        key = normalize_key(key)
        manifest, stale = self._newest_manifest(key)
        try:
            return self._get(manifest, stale, start, end)
        except Unrecoverable:
            # A concurrent overwrite deletes the old version's fragments after committing the new
            # manifest; a reader that picked the old manifest just before retries on the new one.
            newer, stale = self._newest_manifest(key)
            if newer.version == manifest.version:
                raise
            return self._get(newer, stale, start, end)

    def _get(self, manifest: Manifest, stale: set[int], start: int, end: int | None) -> tuple[bytes, ReadReport]:
        key = manifest.key
        size = manifest.size
        end = size if end is None else min(end, size)
        start = max(0, start if start >= 0 else size + start)
        if end < 0:
            end = max(0, size + end)
        report = ReadReport(stale_manifests=stale)
        if start >= end:
            return b"", report
        data, out = _new_bytes(end - start)
        try:
            self._read_range_into(manifest, start, end, out, report)
        finally:
            out.release()
        if (report.damaged or report.stale_manifests) and self.repair_on_read:
            self.repair(key)
            report.repaired = True
        return data if isinstance(data, bytes) else bytes(data), report

    def read_into(self, key: str, buffer: Any, start: int = 0) -> int:
        """Decode ``key`` from ``start`` into a caller-owned writable buffer; returns bytes written.

        Why: a fresh multi-GiB ``bytes`` costs a page fault per 4 KiB page (here more than the
        decoding itself); restoring a checkpoint into a reused or pinned buffer skips that.
        Repair-on-read applies as in ``get``.
        """
        key = normalize_key(key)
        manifest, stale = self._newest_manifest(key)
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise DataError("read_into needs a writable buffer (bytearray, memoryview of one, numpy array).",
                            hint="Pass a bytearray or use get() for new bytes.", field="buffer")
        end = min(manifest.size, start + len(view))
        if start >= end:
            return 0
        report = ReadReport(stale_manifests=stale)
        out = _OutBuffer.over(view[: end - start])
        try:
            self._read_range_into(manifest, start, end, out, report)
        finally:
            out.release()
        if (report.damaged or report.stale_manifests) and self.repair_on_read:
            self.repair(key)
        return end - start

    def _read_fragment_range(self, manifest: Manifest, disk: int, s0: int, s1: int) -> bytes | None:
        offset = s0 * manifest.frag_size
        length = sum(manifest.fragment_length(s) for s in range(s0, s1))
        try:
            with open(self._frag_path(disk, manifest.version), "rb") as f:
                f.seek(offset)
                return f.read(length)
        except OSError:
            return None

    def _verified(self, manifest: Manifest, disk: int, raw: bytes | None, s0: int, s1: int) -> dict[int, bytes]:
        """Per-stripe fragments of one disk whose CRC matches the manifest."""
        out: dict[int, bytes] = {}
        if raw is None:
            return out
        pos = 0
        crcs = manifest.crcs[disk]
        for s in range(s0, s1):
            n = manifest.fragment_length(s)
            chunk = raw[pos : pos + n]
            pos += n
            if len(chunk) == n and _crc(chunk) == crcs[s]:
                out[s] = chunk
        return out

    def _read_range_into(self, manifest: Manifest, start: int, end: int, out: _OutBuffer,
                         report: ReadReport) -> None:
        """Fill ``out`` with object bytes [start, end): fast path per batch, decode where needed.

        The next batch's reads are in flight while this one is checked. Every read into ``out`` is
        waited for before returning, also on error, since ``out`` may be freed right after.
        """
        ss = manifest.profile.stripe_size
        per_batch = max(1, BATCH_BYTES // ss)
        s_last = (end - 1) // ss + 1
        batches = [range(b, min(b + per_batch, s_last)) for b in range(start // ss, s_last, per_batch)]
        fds = _FragmentFiles(self, manifest)
        inflight: deque[_FastBatch] = deque()
        try:
            for i, stripes in enumerate(batches):
                if i == 0:
                    inflight.append(self._start_fast(manifest, stripes, start, end, out, fds))
                if i + 1 < len(batches):
                    inflight.append(self._start_fast(manifest, batches[i + 1], start, end, out, fds))
                failed = self._finish_fast(manifest, inflight.popleft(), start, out, report)
                if failed:
                    self._decode_stripes(manifest, failed, start, end, out, report, fds)
        finally:
            for batch in inflight:
                _wait_all(batch.futures)
            fds.close()

    def _start_fast(self, manifest: Manifest, stripes: range, start: int, end: int, out: _OutBuffer,
                    fds: _FragmentFiles) -> _FastBatch:
        """Submit one ``preadv`` per data disk (per contiguous run) for the stripes' payloads."""
        k, ss, h = manifest.profile.k, manifest.profile.stripe_size, self.codec.header_size
        batch = _FastBatch(stripes)
        if h is None:  # fragment layout unknown: decode everything
            batch.failed = {s: set() for s in stripes}
            return batch
        lost = {d for d in range(k) if fds.fd(d) is None}
        if lost:
            batch.failed = {s: set(lost) for s in stripes}
            if self.codec.direct is None:  # pyeclib rebuilds every stripe from k whole fragments
                return batch
            # else the intact data fragments land in ``out`` as usual and ISA-L fills in the rest
        for d in sorted(set(range(k)) - lost):
            runs: list[_Run] = []
            for s in stripes:
                length = self._stripe_len(manifest, s)
                payload = manifest.fragment_length(s) - h
                lo = s * ss + d * payload
                a, b = max(lo, start), min(lo + payload, s * ss + length, end)
                if a >= b:  # this fragment holds no byte of the range (or only padding)
                    continue
                chk = _Check(d, s, bytearray(h), bytearray(a - lo), a - start, b - start,
                             bytearray(lo + payload - b), payload, length)
                bufs: list[Any] = [chk.header]
                if chk.pre:
                    bufs.append(chk.pre)
                bufs.append(out.view[chk.lo : chk.hi])
                if chk.post:
                    bufs.append(chk.post)
                offset = s * manifest.frag_size
                if runs and runs[-1].end == offset:
                    runs[-1].add(chk, bufs, manifest.fragment_length(s))
                else:
                    runs.append(_Run(offset, [chk], bufs, offset + manifest.fragment_length(s)))
            if runs:
                batch.futures.append(_submit(_read_runs, fds, d, runs, out.address,
                                             inline=runs[-1].end - runs[0].offset < _INLINE_BYTES))
        return batch

    def _finish_fast(self, manifest: Manifest, batch: _FastBatch, start: int, out: _OutBuffer,
                     report: ReadReport) -> dict[int, set[int]]:
        """Verify a batch's fragments; stripes needing a decode -> their failed data disks."""
        need = batch.failed
        for bad in need.values():
            report.damaged |= bad
        for disk, runs in _results(batch.futures):
            crcs = manifest.crcs[disk]
            for run in runs:
                done = 0
                for chk in run.checks:
                    done += len(chk.header) + chk.payload
                    if run.got < done or chk.crc != crcs[chk.stripe]:
                        report.damaged.add(disk)
                        need.setdefault(chk.stripe, set()).add(disk)
                    elif not self.codec.header_matches(chk.header, disk, chk.payload, chk.stripe_len):
                        need.setdefault(chk.stripe, set()).add(_ODD_LAYOUT)  # intact, laid out otherwise
        return need

    def _decode_stripes(self, manifest: Manifest, failed: dict[int, set[int]], start: int, end: int,
                        out: _OutBuffer, report: ReadReport, fds: _FragmentFiles) -> None:
        """Rebuild the given stripes from any k intact fragments (data first, then parity).

        Stripes wholly inside the range whose intact data fragments are already in ``out`` (and a
        direct codec) need only as many parity fragments as data fragments were lost: ISA-L writes
        the lost payloads straight into ``out``. Other stripes go through pyeclib.
        """
        k, n, ss = manifest.profile.k, manifest.profile.n, manifest.profile.stripe_size
        direct = {s for s, bad in failed.items()
                  if bad and _ODD_LAYOUT not in bad and self._in_place(manifest, s, start, end)}
        tried: dict[int, set[int]] = {s: set(range(k)) if s in direct else set(bad) for s, bad in failed.items()}
        goal = {s: len(bad) if s in direct else k for s, bad in failed.items()}
        have: dict[int, dict[int, bytes]] = {s: {} for s in failed}
        while True:
            want: dict[int, list[int]] = {}  # disk -> stripes to fetch this round
            for s, frags in have.items():
                spare = [d for d in range(n) if d not in tried[s]]
                for d in spare[: goal[s] - len(frags)]:
                    want.setdefault(d, []).append(s)
                    tried[s].add(d)
            if not want:
                break
            small = sum(len(v) for v in want.values()) * manifest.frag_size < _INLINE_BYTES
            futures = [_submit(_read_fragments, fds, d,
                               [(s, s * manifest.frag_size, manifest.fragment_length(s)) for s in stripes],
                               inline=small)
                       for d, stripes in want.items()]
            for disk, got in _results(futures):
                for s, chunk, crc in got:
                    if chunk is not None and len(chunk) == manifest.fragment_length(s) \
                            and crc == manifest.crcs[disk][s]:
                        have[s][disk] = chunk
                    else:
                        report.damaged.add(disk)
        for s, frags in sorted(have.items()):
            intact = len(frags) + (k - len(failed[s]) if s in direct else 0)
            if intact < k:
                raise Unrecoverable(
                    f"stripe {s} of {manifest.key!r} has only {intact} intact fragments; {k} are needed.",
                    hint="Restore the lost disks from a backup; this object cannot be rebuilt.",
                )
            if s in direct:
                self._rebuild_in_place(manifest, s, sorted(failed[s]), frags, start, out)
                continue
            length = self._stripe_len(manifest, s)
            a, b = max(s * ss, start), min(s * ss + length, end)
            if not self._rebuild_payloads(manifest, s, frags, a, b, start, out):
                stripe = self.codec.decode(frags)
                out.view[a - start : b - start] = memoryview(stripe)[a - s * ss : b - s * ss]

    def _in_place(self, manifest: Manifest, s: int, start: int, end: int) -> bool:
        """Whether stripe ``s`` can be rebuilt in ``out`` by ISA-L: a full stripe of the codec's size
        (no padding) wholly inside [start, end), so every data payload lies in ``out``."""
        ss = manifest.profile.stripe_size
        payload = self.codec.direct_payload(ss)
        return (payload is not None and self.codec.header_size is not None
                and manifest.fragment_length(s) == self.codec.header_size + payload
                and start <= s * ss and (s + 1) * ss <= min(end, manifest.size))

    def _rebuild_in_place(self, manifest: Manifest, s: int, lost: list[int], parity: dict[int, bytes], start: int,
                          out: _OutBuffer) -> None:
        k, ss, h = manifest.profile.k, manifest.profile.stripe_size, self.codec.header_size
        assert self.codec.direct is not None and h is not None
        payload = ss // k
        base = out.address + s * ss - start
        used = sorted(parity)[: len(lost)]
        sources = [d for d in range(k) if d not in lost] + used
        addresses = [base + d * payload for d in range(k) if d not in lost]
        addresses += [_address_of_bytes(parity[p]) + h for p in used]
        self.codec.direct.rebuild(sources, addresses, lost, [base + d * payload for d in lost], payload)

    def _rebuild_payloads(self, manifest: Manifest, s: int, frags: dict[int, bytes], a: int, b: int, start: int,
                          out: _OutBuffer) -> bool:
        """Copy object bytes [a, b) of stripe ``s`` into ``out`` from its data fragments, rebuilding
        only the lost ones (pyeclib's reconstruct, cheaper than decoding the stripe). False when the
        fragment layout is unknown or unexpected: the caller decodes instead."""
        h = self.codec.header_size
        if h is None:
            return False
        base = s * manifest.profile.stripe_size
        payload = manifest.fragment_length(s) - h
        used = [d for d in range(manifest.profile.k)
                if max(a, base + d * payload) < min(b, base + (d + 1) * payload)]
        lost = [d for d in used if d not in frags]
        full = {**frags, **self.codec.reconstruct(frags, lost)} if lost else frags
        length = self._stripe_len(manifest, s)
        if not all(self.codec.header_matches(memoryview(full[d])[:h], d, payload, length) for d in used):
            return False
        for d in used:
            lo = base + d * payload
            x, y = max(a, lo), min(b, lo + payload)
            out.view[x - start : y - start] = memoryview(full[d])[h + x - lo : h + y - lo]
        return True

    @staticmethod
    def _stripe_len(manifest: Manifest, s: int) -> int:
        ss = manifest.profile.stripe_size
        return min(ss, manifest.size - s * ss)

    # ---- repair ----------------------------------------------------------------------------------

    def check(self, key: str) -> ReadReport:
        """Verify every fragment of ``key`` against its CRCs without changing anything."""
        key = normalize_key(key)
        manifest, stale = self._newest_manifest(key)
        report = ReadReport(stale_manifests=stale)
        for disk in range(manifest.profile.n):
            raw = self._read_fragment_range(manifest, disk, 0, manifest.stripes)
            if len(self._verified(manifest, disk, raw, 0, manifest.stripes)) < manifest.stripes:
                report.damaged.add(disk)
        return report

    def repair(self, key: str) -> ReadReport:
        """Rewrite missing or corrupt fragment files and manifests of ``key`` from intact fragments."""
        key = normalize_key(key)
        report = self.check(key)
        manifest, _ = self._newest_manifest(key)
        if report.damaged:
            good: dict[int, dict[int, bytes]] = {}
            for disk in range(manifest.profile.n):
                if disk not in report.damaged:
                    raw = self._read_fragment_range(manifest, disk, 0, manifest.stripes)
                    good[disk] = self._verified(manifest, disk, raw, 0, manifest.stripes)
            rebuilt: dict[int, list[bytes]] = {d: [] for d in report.damaged}
            for s in range(manifest.stripes):
                frags = {d: per[s] for d, per in good.items() if s in per}
                for d, frag in self.codec.reconstruct(frags, sorted(report.damaged)).items():
                    rebuilt[d].append(frag)
            for d, parts in rebuilt.items():
                self._atomic_write(self._frag_path(d, manifest.version), b"".join(parts))
        for d in report.stale_manifests | report.damaged:
            self._atomic_write(self._manifest_path(d, key), manifest.to_json())
        report.repaired = bool(report.damaged or report.stale_manifests)
        return report

    # ---- delete / list ---------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        key = normalize_key(key)
        manifest, _ = self._newest_manifest(key)
        for d in range(self.profile.n):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                self._manifest_path(d, key).unlink()
        for d in range(self.profile.n):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                self._frag_path(d, manifest.version).unlink()

    def listdir(self, prefix: str) -> tuple[list[str], list[str]]:
        """(object keys, sub-directory prefixes) directly under ``prefix``, union over all disks."""
        prefix = prefix.strip("/")
        files: set[str] = set()
        dirs: set[str] = set()
        for d in range(self.profile.n):
            base = self.disks[d] / "meta" / prefix if prefix else self.disks[d] / "meta"
            try:
                entries = list(os.scandir(base))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                if e.name.startswith(".tmp-"):
                    continue
                child = f"{prefix}/{e.name}" if prefix else e.name
                if e.is_dir():
                    dirs.add(child)
                elif e.name.endswith(MANIFEST_SUFFIX):
                    files.add(child[: -len(MANIFEST_SUFFIX)])
        return sorted(files), sorted(dirs)

    def walk_keys(self, prefix: str = "") -> Iterator[str]:
        files, dirs = self.listdir(prefix)
        yield from files
        for sub in dirs:
            yield from self.walk_keys(sub)

    def scrub(self, prefix: str = "", *, repair: bool = True) -> dict[str, ReadReport]:
        """Check (and by default repair) every object under ``prefix``; returns the damaged ones.

        Reads touch parity only when data fragments are bad, so lost parity is found here: run it
        periodically (CLI hook: ``modelplane data scrub``).
        """
        found: dict[str, ReadReport] = {}
        for key in self.walk_keys(prefix):
            try:
                report = self.repair(key) if repair else self.check(key)
            except ObjectNotFound:  # deleted while scrubbing
                continue
            except Unrecoverable as exc:
                report = ReadReport(damaged=set(range(self.profile.n)))
                report.error = str(exc)
            if report.damaged or report.stale_manifests:
                found[key] = report
        return found

    def collect_garbage(self, *, older_than_s: float = ORPHAN_GRACE_S, now: float | None = None) -> int:
        """Delete fragment files no manifest references (left by crashed writers or overwrites)."""
        now = time.time() if now is None else now
        live: set[str] = set()
        for key in self.walk_keys():
            with contextlib.suppress(ObjectNotFound):
                live.add(self.head(key).version)
        removed = 0
        for d in range(self.profile.n):
            for sub in (self.disks[d] / "frags").glob("*/*"):
                version = sub.name.split(".")[0]
                if version not in live and now - sub.stat().st_mtime >= older_than_s:
                    sub.unlink()
                    removed += 1
        return removed


@dataclass
class _DirectStripe:
    """A full stripe encoded at flush time by ISA-L: data fragments are its own bytes."""

    owner: bytes  # immutable and kept alive until the batch is on disk
    address: int
    payload: int


class ObjectWriter:
    """Streams one object: encodes full stripes as bytes arrive; ``commit`` makes it visible.

    Fragments of a batch of stripes go to the disks by one ``pwritev`` per disk on the thread pool,
    at explicit offsets, while the next batch is encoded; at most two batches are in flight. With a
    direct codec (:class:`~modelplane.data.erasure.DirectEncoder`) a full stripe is never copied:
    its data fragments are written from the caller's ``bytes`` (other buffers are copied once,
    since the caller may reuse them once ``write`` returns) and only parity is computed.
    """

    _MAX_INFLIGHT = 2

    def __init__(self, store: ErasureCodedStore, key: str, metadata: dict[str, Any]) -> None:
        self.store = store
        self.key = key
        self.metadata = metadata
        self.version = uuid.uuid4().hex
        n = store.profile.n
        self._buf = bytearray()
        self._size = 0
        self._crcs: list[list[int]] = [[] for _ in range(n)]
        self._stripes = 0
        self._first_frag = self._last_frag = 0
        self._batch: list[list[bytes] | _DirectStripe] = []
        self._batch_bytes = 0
        self._offset = 0  # fragment-file offset where the current batch starts
        self._inflight: deque[tuple[list[Future[list[int]]], Any]] = deque()
        self._fds: list[int] = []
        self._done = False
        try:
            for d in range(n):
                path = store._frag_path(d, self.version)
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
        except BaseException:
            self.abort()
            raise

    def write(self, data: Any) -> int:
        """Append bytes (any contiguous buffer); full stripes are encoded and queued right away."""
        if self._done:
            raise DataError(f"object {self.key!r} was already committed or aborted.",
                            hint="Open a new writer for another version.")
        ss = self.store.profile.stripe_size
        with memoryview(data) as raw, raw.cast("B") as mv:
            total, pos = len(mv), 0
            if self._buf:
                pos = min(ss - len(self._buf), total)
                self._buf += mv[:pos]
                if len(self._buf) < ss:
                    return total
                self._encode(bytes(self._buf))
                self._buf.clear()
            full = (total - pos) // ss * ss
            if full:
                owner = data if type(data) is bytes else None
                # In place: no copy of the stripes for pyeclib; ``mv`` keeps the caller's buffer pinned.
                for stripe in stripe_views(data, ss, pos, pos + full):
                    self._encode(stripe, owner)
                pos += full
            if pos < total:
                self._buf += mv[pos:]
        return total

    def _encode(self, stripe: bytes | ctypes.Array[ctypes.c_char], owner: bytes | None = None) -> None:
        """Queue one stripe: direct (parity at flush) when it is a full stripe of a direct codec,
        else encoded by pyeclib now. ``owner`` is the immutable ``bytes`` that ``stripe`` views."""
        codec = self.store.codec
        payload = codec.direct_payload(len(stripe))
        if payload is not None and codec.header_size is not None:
            if isinstance(stripe, bytes):
                owner, address = stripe, _address_of_bytes(stripe)
            elif owner is not None:
                address = ctypes.addressof(stripe)
            else:  # a view of a caller's mutable buffer: it may change after write() returns
                owner = bytes(stripe)
                address = _address_of_bytes(owner)
            self._batch.append(_DirectStripe(owner, address, payload))
            frag_len = codec.header_size + payload
        else:
            frags = codec.encode(stripe)
            self._batch.append(frags)
            frag_len = len(frags[0])
        if not self._stripes:
            self._first_frag = frag_len
        self._last_frag = frag_len
        self._stripes += 1
        self._size += len(stripe)
        self._batch_bytes += len(stripe)
        if self._batch_bytes >= BATCH_BYTES:
            self._flush()

    def _take_batch(self) -> tuple[list[list[list[Any]]], list[list[int]], int, Any]:
        """Per disk, the fragments of the queued stripes (each a list of buffers: header and
        payload for direct stripes) and their CRCs, the file offset they start at, and what must
        stay alive. CRCs are taken right after coding, while the bytes are still in cache."""
        batch, offset = self._batch, self._offset
        self._batch, self._batch_bytes = [], 0
        codec, k, m = self.store.codec, self.store.profile.k, self.store.profile.m
        n = k + m
        direct = [st for st in batch if isinstance(st, _DirectStripe)]
        parity_obj: Any = None
        parity_at = 0
        direct_crcs: list[list[int]] = []
        if direct:
            payload = direct[0].payload
            parity_obj, parity = _new_bytes(m * payload * len(direct))
            parity_at = parity.address
            parity.release()
            header_crcs = [_crc_bytes(0, h) for h in codec.headers(payload * k)]
            for i, ds in enumerate(direct):  # ISA-L and CRCs, GIL released: the I/O threads keep writing
                assert codec.direct is not None
                at = parity_at + i * m * payload
                codec.direct.parity(ds.address, payload, at)
                direct_crcs.append([_crc_at(header_crcs[d], ds.address + d * payload, payload) for d in range(k)]
                                   + [_crc_at(header_crcs[k + j], at + j * payload, payload) for j in range(m)])
        frags: list[list[list[Any]]] = [[] for _ in range(n)]
        crcs: list[list[int]] = [[] for _ in range(n)]
        i_direct = 0
        for st in batch:
            if isinstance(st, _DirectStripe):
                headers = codec.headers(st.payload * k)
                for d in range(k):
                    frags[d].append([headers[d], _view_at(st.address + d * st.payload, st.payload)])
                base = parity_at + i_direct * m * st.payload
                for j in range(m):
                    frags[k + j].append([headers[k + j], _view_at(base + j * st.payload, st.payload)])
                for d in range(n):
                    crcs[d].append(direct_crcs[i_direct][d])
                i_direct += 1
                self._offset += len(headers[0]) + st.payload
            else:
                for d in range(n):
                    frags[d].append([st[d]])
                    crcs[d].append(_crc_bytes(0, st[d]))
                self._offset += len(st[0])
        return frags, crcs, offset, (batch, parity_obj)

    def _flush(self) -> None:
        frags, crcs, offset, keep = self._take_batch()
        self._inflight.append(([_pool().submit(_write_batch, self._fds[d], per_disk, offset, crcs[d])
                                for d, per_disk in enumerate(frags)], keep))
        while len(self._inflight) > self._MAX_INFLIGHT:
            self._collect(self._inflight.popleft()[0])

    def _collect(self, futures: list[Future[list[int]]]) -> None:
        """Wait for one batch on every disk and keep its fragment CRCs (batches finish in order)."""
        for d, crcs in enumerate(_results(futures)):
            self._crcs[d].extend(crcs)

    def commit(self) -> Manifest:
        if self._done:
            raise DataError(f"object {self.key!r} was already committed or aborted.")
        if self._buf:
            self._encode(bytes(self._buf))
            self._buf.clear()
        while self._inflight:
            self._collect(self._inflight.popleft()[0])
        tail, tail_crcs, offset, keep = self._take_batch()
        durable = self.store.durable

        def seal(d: int) -> list[int]:
            # The last batch, the fsync and the directory fsync in one task per disk: the latency
            # of one disk, not of n (all of these release the GIL).
            fd = self._fds[d]
            crcs = _write_batch(fd, tail[d], offset, tail_crcs[d]) if tail[d] else []
            if durable:
                os.fsync(fd)
            self._fds[d] = -1
            os.close(fd)
            if durable:
                _fsync_dir(self.store._frag_path(d, self.version).parent)
            return crcs

        self._collect([_pool().submit(seal, d) for d in range(self.store.profile.n)])
        del keep
        manifest = Manifest(
            key=self.key,
            version=self.version,
            generation=time.time_ns(),
            size=self._size,
            profile=self.store.profile,
            stripes=self._stripes,
            frag_size=self._first_frag,
            last_frag_size=self._last_frag,
            crcs=tuple(tuple(c) for c in self._crcs),
            metadata=self.metadata,
        )
        old: Manifest | None = None
        with contextlib.suppress(ObjectNotFound):
            old = self.store.head(self.key)
        body = manifest.to_json()
        writes = [_pool().submit(self.store._atomic_write, self.store._manifest_path(d, self.key), body)
                  for d in range(self.store.profile.n)]
        for w in writes:
            try:
                w.result()
            except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
                _wait_all(writes)
                self.abort()
                raise DataError(
                    f"cannot store {self.key!r}: a prefix of it is an object, or it is a directory ({exc}).",
                    hint="Object keys and directory prefixes must not collide, as in a file system.",
                    field="path",
                ) from exc
        self._done = True
        if old is not None and old.version != self.version:
            paths = [self.store._frag_path(d, old.version) for d in range(self.store.profile.n)]
            _wait_all([_pool().submit(_unlink_quietly, p) for p in paths])
        return manifest

    def abort(self) -> None:
        """Drop everything written; the previously committed version (if any) stays visible."""
        if self._done:
            return
        self._done = True
        # Writes still in flight use the descriptors: wait for them before closing.
        while self._inflight:
            _wait_all(self._inflight.popleft()[0])
        for d, fd in enumerate(self._fds):
            if fd >= 0:
                os.close(fd)
                self._fds[d] = -1
        for d in range(self.store.profile.n):
            _unlink_quietly(self.store._frag_path(d, self.version))

    def __del__(self) -> None:
        # A writer dropped without commit or abort must not leak descriptors; its fragment files are
        # orphans that collect_garbage removes.
        inflight, fds = getattr(self, "_inflight", ()), getattr(self, "_fds", [])
        for futures, _keep in inflight:
            _wait_all(futures)
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _view_at(address: int, n: int) -> Any:
    return (ctypes.c_char * n).from_address(address)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=16, thread_name_prefix="ec-disk")


_INLINE_BYTES = 256 << 10


def _submit(fn: Callable[..., T], *args: Any, inline: bool = False) -> Future[T]:
    """Run ``fn`` on the I/O pool, or right here when it is too small to pay for a thread hand-off
    (tens of microseconds, more on a busy machine): small objects stay as fast as sequential code."""
    if not inline:
        return _pool().submit(fn, *args)
    fut: Future[T] = Future()
    try:
        fut.set_result(fn(*args))
    except BaseException as exc:  # delivered by result(), as from the pool
        fut.set_exception(exc)
    return fut


def _wait_all(futures: Sequence[Future[Any]]) -> None:
    """Wait for every future, ignoring their errors (the caller is already failing or cleaning up)."""
    for fut in futures:
        with contextlib.suppress(BaseException):
            fut.result()


def _results(futures: Sequence[Future[Any]]) -> list[Any]:
    """All results, raising the first error only once every future is done (none still uses a
    descriptor or buffer the caller is about to release)."""
    _wait_all(futures)
    return [fut.result() for fut in futures]


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        path.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- vectored I/O ------------------------------------------------------------------------------


def _advance(bufs: list[Any], n: int) -> list[Any]:
    """The buffers left after the first ``n`` bytes were transferred (a short read or write)."""
    i = 0
    while i < len(bufs) and n >= len(bufs[i]):
        n -= len(bufs[i])
        i += 1
    rest = bufs[i:]
    if n and rest:
        rest[0] = memoryview(rest[0])[n:]
    return rest


def _write_batch(fd: int, frags: list[list[Any]], offset: int, crcs: list[int]) -> list[int]:
    """Write a batch of one disk's fragments (each a list of buffers) at ``offset`` after reserving
    its blocks; returns ``crcs`` (theirs, computed by the caller) for the caller's bookkeeping.

    Reserving first: on ext4 and XFS allocating the extent up front costs less kernel time than
    reserving delayed-allocation blocks page by page (~25% of the write here). Best effort: where
    the file system cannot, the write alone does it.
    """
    fallocate = _fallocate()
    if fallocate is not None:
        fallocate(fd, 0, offset, sum(len(p) for pieces in frags for p in pieces))
    _pwritev_all(fd, [piece for pieces in frags for piece in pieces], offset)
    return crcs


@functools.cache
def _fallocate() -> Any:
    """libc's fallocate(2) wrapper, which fails where unsupported (``os.posix_fallocate`` would
    instead write zeros, doubling the I/O)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fn.restype = ctypes.c_int
    return fn


def _pwritev_all(fd: int, bufs: list[Any], offset: int) -> None:
    """Write all buffers at ``offset`` with as few ``pwritev`` calls as the kernel allows."""
    while bufs:
        n = os.pwritev(fd, bufs[:_IOV_MAX], offset)
        offset += n
        bufs = _advance(bufs, n)


def _preadv_full(fd: int, bufs: list[Any], offset: int) -> int:
    """Fill the buffers from ``offset``; returns the bytes read (fewer only at end of file)."""
    got = 0
    while bufs:
        n = os.preadv(fd, bufs[:_IOV_MAX], offset)
        if n <= 0:
            break
        got += n
        offset += n
        bufs = _advance(bufs, n)
    return got


class _FragmentFiles:
    """Read-only descriptors of one version's fragment files, opened on first use, shared by threads.

    A file that cannot be opened is remembered as missing (None) so no thread retries it.
    """

    def __init__(self, store: ErasureCodedStore, manifest: Manifest) -> None:
        self._paths = [store._frag_path(d, manifest.version) for d in range(manifest.profile.n)]
        self._fds: dict[int, int | None] = {}
        self._lock = threading.Lock()

    def fd(self, disk: int) -> int | None:
        with self._lock:
            if disk not in self._fds:
                try:
                    self._fds[disk] = os.open(self._paths[disk], os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    self._fds[disk] = None
            return self._fds[disk]

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                if fd is not None:
                    os.close(fd)
            self._fds.clear()


@dataclass
class _Check:
    """One data fragment read on the fast path: its header, the payload parts that fall outside the
    requested range (``pre``/``post``, including padding) and the part read straight into the output
    at ``[lo, hi)``; together they are the whole fragment, which the manifest's CRC covers."""

    disk: int
    stripe: int
    header: bytearray
    pre: bytearray
    lo: int
    hi: int
    post: bytearray
    payload: int
    stripe_len: int
    crc: int = -1  # of the whole fragment as read, set by the reading thread


@dataclass
class _Run:
    """Fragments of one disk that are contiguous in its file: one ``preadv``."""

    offset: int
    checks: list[_Check]
    bufs: list[Any]
    end: int
    got: int = 0

    def add(self, chk: _Check, bufs: list[Any], length: int) -> None:
        self.checks.append(chk)
        self.bufs.extend(bufs)
        self.end += length


@dataclass
class _FastBatch:
    stripes: range
    futures: list[Future[tuple[int, list[_Run]]]] = field(default_factory=list)
    failed: dict[int, set[int]] = field(default_factory=dict)  # stripe -> data disks known bad


def _read_runs(fds: _FragmentFiles, disk: int, runs: list[_Run], out_address: int) -> tuple[int, list[_Run]]:
    """Read one disk's runs and CRC each fragment where it landed (both without the GIL)."""
    fd = fds.fd(disk)
    for run in runs:
        try:
            run.got = _preadv_full(fd, run.bufs, run.offset) if fd is not None else 0
        except OSError:
            run.got = 0
        run.bufs = []  # drop the views into the output as soon as they are filled
        done = 0
        for chk in run.checks:
            done += len(chk.header) + chk.payload
            if run.got >= done:
                crc = _crc_bytes(_crc_bytes(0, chk.header), chk.pre)
                crc = _crc_at(crc, out_address + chk.lo, chk.hi - chk.lo)
                chk.crc = _crc_bytes(crc, chk.post)
    return disk, runs


def _read_fragments(fds: _FragmentFiles, disk: int, wanted: list[tuple[int, int, int]],
                    ) -> tuple[int, list[tuple[int, bytes | None, int]]]:
    """Whole fragments (stripe, offset, length) of one disk as bytes for pyeclib, with their CRC;
    None where unreadable."""
    fd = fds.fd(disk)
    got: list[tuple[int, bytes | None, int]] = []
    for s, offset, length in wanted:
        try:
            chunk = os.pread(fd, length, offset) if fd is not None else None
        except OSError:
            chunk = None
        got.append((s, chunk, _crc_bytes(0, chunk) if chunk is not None else -1))
    return disk, got


# ---- output buffers ----------------------------------------------------------------------------


class _OutBuffer:
    """A writable destination for reads and its address (for the CRC of what landed in it)."""

    def __init__(self, address: int, view: memoryview, owner: Any) -> None:
        self.address = address
        self.view = view
        self._owner = owner  # keeps the memory alive as long as the views are used

    @classmethod
    def over(cls, view: memoryview) -> _OutBuffer:
        arr = (ctypes.c_char * len(view)).from_buffer(view)
        return cls(ctypes.addressof(arr), view, arr)

    def release(self) -> None:
        self._owner = None  # first: a ctypes array over the view pins it until it is gone
        self.view.release()


def _new_bytes(n: int) -> tuple[bytes | bytearray, _OutBuffer]:
    """An uninitialised ``bytes`` of ``n`` bytes and a writable view to fill it before it is shared.

    Why: ``get`` must return ``bytes``; filling a bytearray and copying it would add a full copy
    and a second set of page faults. ``PyBytes_FromStringAndSize(NULL, n)`` is CPython's documented
    way to build a bytes object in place. Objects of 32 MiB and more get their own mapping, which is
    asked for transparent huge pages: on this VM a page fault per 4 KiB costs more than the
    erasure decoding (benchmarks/erasure.py). Elsewhere a bytearray is returned (still a buffer).
    """
    make = _bytes_factory()
    if make is None:
        arr = bytearray(n)
        return arr, _OutBuffer.over(memoryview(arr))
    obj = make(None, n)
    address = ctypes.cast(ctypes.c_char_p(obj), ctypes.c_void_p).value
    assert address is not None
    if n >= 32 << 20:
        _advise_huge(address, n)
    view = memoryview((ctypes.c_char * n).from_address(address)).cast("B")
    return obj, _OutBuffer(address, view, obj)


@functools.cache
def _bytes_factory() -> Any:
    if sys.implementation.name != "cpython":
        return None
    fn = ctypes.pythonapi.PyBytes_FromStringAndSize
    fn.restype = ctypes.py_object
    fn.argtypes = (ctypes.c_char_p, ctypes.c_ssize_t)
    return fn


@functools.cache
def _madvise() -> Any:
    from modelplane.data.erasure import tune_allocator

    if not sys.platform.startswith("linux") or not tune_allocator():
        return None  # opted out with MODELPLANE_EC_TUNE_MALLOC=0, or not glibc
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


def _advise_huge(address: int, n: int) -> None:
    fn = _madvise()
    lo = (address + _HUGE - 1) & ~(_HUGE - 1)
    hi = (address + n) & ~(_HUGE - 1)
    if fn is not None and hi > lo:
        fn(lo, hi - lo, _MADV_HUGEPAGE)  # a hint: failure only costs speed
