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
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelplane.data.erasure import Codec, ErasureProfile
from modelplane.data.errors import DataError, ObjectNotFound, Unrecoverable
from modelplane.data.tfrecord import _crc32c

MANIFEST_SUFFIX = ".~mf"
FORMAT = 1
ORPHAN_GRACE_S = 3600.0


def _crc(data: bytes) -> int:
    return _crc32c()(data)


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
        disks: list[str | os.PathLike[str]],
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
        ss = manifest.profile.stripe_size
        s0, s1 = start // ss, (end - 1) // ss + 1
        stripes = self._read_stripes(manifest, s0, s1, report)
        data = stripes[0] if len(stripes) == 1 else b"".join(stripes)
        base = s0 * ss
        if (report.damaged or report.stale_manifests) and self.repair_on_read:
            self.repair(key)
            report.repaired = True
        if start == base and end - base == len(data):
            return data, report
        return data[start - base : end - base], report

    def read_into(self, key: str, buffer: Any, start: int = 0) -> int:
        """Decode ``key`` from ``start`` into a caller-owned writable buffer; returns bytes written.

        Why: a fresh multi-GiB ``bytes`` costs a page fault per 4 KiB page (here more than the
        decoding itself); restoring a checkpoint into a reused or pinned buffer skips that.
        Repair-on-read applies as in ``get``.
        """
        key = normalize_key(key)
        manifest, stale = self._newest_manifest(key)
        view = memoryview(buffer).cast("B")
        end = min(manifest.size, start + len(view))
        if start >= end:
            return 0
        ss = manifest.profile.stripe_size
        report = ReadReport(stale_manifests=stale)
        pos = 0
        for s in range(start // ss, (end - 1) // ss + 1):
            stripe = self._read_stripes(manifest, s, s + 1, report)[0]
            lo = max(start - s * ss, 0)
            hi = min(end - s * ss, len(stripe))
            view[pos : pos + hi - lo] = stripe[lo:hi] if (lo, hi) != (0, len(stripe)) else stripe
            pos += hi - lo
        if (report.damaged or report.stale_manifests) and self.repair_on_read:
            self.repair(key)
        return pos

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

    def _read_stripes(self, manifest: Manifest, s0: int, s1: int, report: ReadReport) -> list[bytes]:
        k, n = manifest.profile.k, manifest.profile.n
        # One read per stripe fragment: each lands in its own bytes object, which is what the CRC
        # and pyeclib need, so there is no further copy. Parity is opened only when needed.
        handles: dict[int, Any] = {}

        def fragment(disk: int, s: int) -> bytes | None:
            if disk not in handles:
                try:
                    handles[disk] = open(self._frag_path(disk, manifest.version), "rb")  # noqa: SIM115
                    handles[disk].seek(s * manifest.frag_size)
                except OSError:
                    handles[disk] = None
            f = handles[disk]
            if f is None:
                return None
            size = manifest.fragment_length(s)
            try:
                if f.tell() != s * manifest.frag_size:
                    f.seek(s * manifest.frag_size)
                chunk = f.read(size)
            except OSError:
                return None
            if len(chunk) != size or _crc(chunk) != manifest.crcs[disk][s]:
                return None
            return bytes(chunk)

        out = []
        try:
            for s in range(s0, s1):
                frags: dict[int, bytes] = {}
                for disk in range(n):
                    if len(frags) == k:
                        break
                    chunk = fragment(disk, s)
                    if chunk is None:
                        report.damaged.add(disk)
                    else:
                        frags[disk] = chunk
                if len(frags) < k:
                    raise Unrecoverable(
                        f"stripe {s} of {manifest.key!r} has only {len(frags)} intact fragments; {k} are needed.",
                        hint="Restore the lost disks from a backup; this object cannot be rebuilt.",
                    )
                stripe = self.codec.decode(frags)
                length = self._stripe_len(manifest, s)
                out.append(stripe if len(stripe) == length else stripe[:length])
        finally:
            for f in handles.values():
                if f is not None:
                    f.close()
        return out

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


class ObjectWriter:
    """Streams one object: encodes full stripes as bytes arrive; ``commit`` makes it visible."""

    def __init__(self, store: ErasureCodedStore, key: str, metadata: dict[str, Any]) -> None:
        self.store = store
        self.key = key
        self.metadata = metadata
        self.version = uuid.uuid4().hex
        self._buf = bytearray()
        self._size = 0
        self._crcs: list[list[int]] = [[] for _ in range(store.profile.n)]
        self._frag_sizes: list[int] = []
        self._files = []
        for d in range(store.profile.n):
            path = store._frag_path(d, self.version)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._files.append(open(path, "wb"))  # noqa: SIM115 - closed in commit/abort
        self._done = False

    def write(self, data: bytes) -> int:
        ss = self.store.profile.stripe_size
        if not self._buf and len(data) >= ss:  # fast path: encode straight from the caller's bytes
            data = bytes(data)
            full = len(data) // ss * ss
            for off in range(0, full, ss):
                self._encode(data[off : off + ss])
            self._buf += data[full:]
            return len(data)
        self._buf += data
        if len(self._buf) >= ss:
            mv = memoryview(self._buf)
            full = len(self._buf) // ss * ss
            for off in range(0, full, ss):
                self._encode(bytes(mv[off : off + ss]))
            mv.release()
            del self._buf[:full]
        return len(data)

    def _encode(self, stripe: bytes) -> None:
        frags = self.store.codec.encode(stripe)
        self._size += len(stripe)
        self._frag_sizes.append(len(frags[0]))
        for d, frag in enumerate(frags):
            self._files[d].write(frag)
            self._crcs[d].append(_crc(frag))

    def commit(self) -> Manifest:
        if self._done:
            raise DataError(f"object {self.key!r} was already committed or aborted.")
        if self._buf:
            self._encode(bytes(self._buf))
            self._buf.clear()
        def seal(d: int) -> None:
            f = self._files[d]
            if self.store.durable:
                f.flush()
                os.fsync(f.fileno())
            f.close()
            if self.store.durable:
                _fsync_dir(self.store._frag_path(d, self.version).parent)

        # One fsync per disk, in parallel (fsync releases the GIL): latency of one disk, not of n.
        list(_pool().map(seal, range(self.store.profile.n)))
        manifest = Manifest(
            key=self.key,
            version=self.version,
            generation=time.time_ns(),
            size=self._size,
            profile=self.store.profile,
            stripes=len(self._frag_sizes),
            frag_size=self._frag_sizes[0] if self._frag_sizes else 0,
            last_frag_size=self._frag_sizes[-1] if self._frag_sizes else 0,
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
                self._done = False
                self.abort()
                raise DataError(
                    f"cannot store {self.key!r}: a prefix of it is an object, or it is a directory ({exc}).",
                    hint="Object keys and directory prefixes must not collide, as in a file system.",
                    field="path",
                ) from exc
        self._done = True
        if old is not None and old.version != self.version:
            for d in range(self.store.profile.n):
                with contextlib.suppress(FileNotFoundError):
                    self.store._frag_path(d, old.version).unlink()
        return manifest

    def abort(self) -> None:
        """Drop everything written; the previously committed version (if any) stays visible."""
        if self._done:
            return
        self._done = True
        for d, f in enumerate(self._files):
            f.close()
            with contextlib.suppress(FileNotFoundError):
                self.store._frag_path(d, self.version).unlink()


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=16, thread_name_prefix="ec-disk")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
