"""Small files packed into large shards of TFRecord records with a per-sample offset index.

Why: opening a small file costs ~11 us locally and a request on S3, a framed record ~1.5 us
(ANCHORS.md, Data). A dataset directory holds::

    shard-<pack>-00000.tfrecord ...   records = file contents, in sorted key order
    index.json                        keys, shard number, byte offset, payload length per sample;
                                      per shard: name, bytes, records, CRC32C of the whole file

``index.json`` is written last and names the shards of one pack run, so a dataset is visible whole
or not at all, and re-packing in place never disturbs readers of the previous index.

Sensitive shard sets (``modelplane data protect``, :mod:`modelplane.data.sensitive`): every file is
encrypted in place, shards and ``index.json`` alike, in :data:`SEALED_SEGMENT` segments, and the
reader decrypts them transparently given the dataset's key (by default released by the control
plane to this job). Decisions, and why:

* ``index.json`` is encrypted too: it holds the sample keys (the original file names, often an ID
  of a person) and every sample's length. What stays visible: shard names (a random pack id and a
  number), shard sizes (about the bytes packed into each) and the index's size (about the number
  of samples times the length of their names).
* 16 KiB segments, not the 1 MiB of other files: a random sample decrypts only the segments it
  spans, so a random 4 KiB sample costs ~6 us of CPU against ~10 us at 64 KiB and ~120 us at 1 MiB
  (``benchmarks/small_files.py``, "sealed"); tags cost 0.1%. The last segment decrypted is kept
  (one per process, whatever the number of shards), and ``read_many`` reads a batch in shard order
  so a segment is decrypted once per batch.
* The CRCs stay those of the plaintext, as ``pack`` wrote them (protecting changes no byte of the
  index's content). AES-GCM already authenticates every segment on every read, which a CRC over
  the ciphertext could only repeat, weaker (anyone can recompute a CRC). The plaintext CRCs, kept
  inside the authenticated index, check what GCM cannot: that the bytes decrypted are the ones
  packed (damage before protection, a reader bug) and that a shard is the one the index names (a
  shard swapped for another of the same dataset is authentic on its own). ``verify=True`` means
  per-record CRCs on a sealed shard (cheap beside the decryption); ``verify="shard"`` decrypts each
  shard once per process, one segment at a time, against its whole-shard CRC.

CLI hook: ``modelplane data pack SRC DEST`` -> :func:`pack`.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import threading
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem

from modelplane.data import sensitive, tfrecord
from modelplane.data.errors import CorruptRecord, DataError
from modelplane.data.order import ShuffleMode, epoch_order, rank_stream, worker_stream
from modelplane.data.sensitive import (
    DataKey,
    Header,
    KeyProvider,
    KeyReleaseDenied,
    SealedFile,
    SegmentCache,
    SensitiveDataError,
)

INDEX_NAME = "index.json"
FORMAT = "modelplane-shards/1"
DEFAULT_SHARD_SIZE = 256 << 20
MIN_SHARD_SIZE = 1 << 10
READ_BATCH = 256
ITER_BATCH = 512
VerifyMode = Literal["shard", "record"]
SEALED_SEGMENT = 16 << 10
"""Plaintext bytes per encrypted segment of a protected shard set (see the module docstring)."""
ACCESS_HINT = ("read it from a confidential job: declare it in spec.datasets and set spec.tee; the reader then "
               "gets the key from the control plane with the job's credential (`modelplane data sensitive` "
               "lists the sensitive datasets and their key ids)")


@dataclass(frozen=True)
class PackProgress:
    files_done: int
    files_total: int
    bytes_done: int
    shards_done: int


@dataclass(frozen=True)
class PackResult:
    dest: str
    samples: int
    shards: int
    payload_bytes: int
    shard_bytes: int


def _fs(url: str, fs: AbstractFileSystem | None, storage_options: dict[str, Any] | None) -> tuple[AbstractFileSystem, str]:
    if fs is not None:
        return fs, fs._strip_protocol(url)
    return url_to_fs(url, **(storage_options or {}))  # type: ignore[no-any-return]


def pack(
    src: str,
    dest: str,
    shard_size: int = DEFAULT_SHARD_SIZE,
    *,
    src_fs: AbstractFileSystem | None = None,
    dest_fs: AbstractFileSystem | None = None,
    src_options: dict[str, Any] | None = None,
    dest_options: dict[str, Any] | None = None,
    progress: Callable[[PackProgress], None] | None = None,
) -> PackResult:
    """Pack every file under ``src`` into shards under ``dest`` (any fsspec URL: path, s3://, ec://)."""
    if shard_size < MIN_SHARD_SIZE:
        raise DataError(f"shard_size {shard_size} is too small.", field="shard_size",
                        hint="Use 64-512 MB for real data (default 256 MB).")
    sfs, spath = _fs(src, src_fs, src_options)
    dfs, dpath = _fs(dest, dest_fs, dest_options)
    if not sfs.isdir(spath):
        raise DataError(f"source {src!r} is not a directory.", field="src",
                        hint="Point SRC at the root of the tree of small files.")
    files = sorted(sfs.find(spath))
    if not files:
        raise DataError(f"source {src!r} holds no files.", field="src")
    if _index_is_sealed(dfs, dpath):
        raise DataError(f"{dest!r} holds a sensitive (encrypted) packed dataset.", field="dest",
                        hint="Pack into a new folder and protect that (`modelplane data protect`): packing over "
                             "it would put plaintext beside the encrypted data.")
    prefix = spath.rstrip("/") + "/"
    pack_id = uuid.uuid4().hex[:8]
    dfs.makedirs(dpath, exist_ok=True)

    shards: list[dict[str, Any]] = []
    keys: list[str] = []
    shard_of: list[int] = []
    offsets: list[int] = []
    lengths: list[int] = []
    out = None
    pos = 0
    shard_crc = 0  # CRC32C of the whole shard file: readers check a mapped shard in one pass
    payload_bytes = 0

    def close_shard() -> None:
        nonlocal out
        if out is not None:
            out.close()
            shards[-1]["bytes"] = pos
            shards[-1]["crc32c"] = shard_crc
            out = None

    try:
        for b in range(0, len(files), READ_BATCH):
            batch = files[b : b + READ_BATCH]
            blobs = sfs.cat(batch, on_error="raise")
            for path in batch:
                data = blobs[path] if isinstance(blobs, dict) else blobs
                record = tfrecord.encode_record(data)
                if out is None or (pos + len(record) > shard_size and pos > 0):
                    close_shard()
                    name = f"shard-{pack_id}-{len(shards):05d}.tfrecord"
                    shards.append({"name": name, "bytes": 0, "records": 0})
                    out = dfs.open(f"{dpath}/{name}", "wb")
                    pos = shard_crc = 0
                out.write(record)
                shard_crc = tfrecord.crc32c(record, shard_crc)
                keys.append(path[len(prefix) :] if path.startswith(prefix) else path)
                shard_of.append(len(shards) - 1)
                offsets.append(pos)
                lengths.append(len(data))
                shards[-1]["records"] += 1
                pos += len(record)
                payload_bytes += len(data)
            if progress is not None:
                progress(PackProgress(min(b + READ_BATCH, len(files)), len(files), payload_bytes, len(shards)))
        close_shard()
    except BaseException:
        if out is not None:
            with contextlib.suppress(Exception):
                out.close()
        for s in shards:
            with contextlib.suppress(Exception):
                dfs.rm_file(f"{dpath}/{s['name']}")
        raise

    old = _try_load_index(dfs, dpath)
    index = {
        "format": FORMAT,
        "record_format": "tfrecord",
        "pack_id": pack_id,
        "shards": shards,
        "keys": keys,
        "shard": shard_of,
        "offset": offsets,
        "length": lengths,
    }
    _commit_index(dfs, dpath, json.dumps(index, separators=(",", ":")).encode())
    if old is not None and old.get("pack_id") != pack_id:
        for s in old.get("shards", []):
            with contextlib.suppress(Exception):
                dfs.rm_file(f"{dpath}/{s['name']}")
    return PackResult(dest, len(keys), len(shards), payload_bytes, sum(s["bytes"] for s in shards))


def _try_load_index(fs: AbstractFileSystem, dpath: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(f"{dpath}/{INDEX_NAME}"))  # type: ignore[no-any-return]
    except (FileNotFoundError, ValueError):
        return None


def _index_is_sealed(fs: AbstractFileSystem, dpath: str) -> bool:
    try:
        head = fs.cat_file(f"{dpath}/{INDEX_NAME}", start=0, end=len(sensitive.MAGIC))
    except (FileNotFoundError, NotADirectoryError):
        return False
    return bytes(head) == sensitive.MAGIC


def sealing_segment(uri: str) -> int:
    """The segment size to protect the dataset at ``uri`` with: :data:`SEALED_SEGMENT` where it is,
    or holds, a packed shard set (random reads), else the sensitive module's default."""
    fs, root = url_to_fs(uri)
    try:
        names = [root] if fs.isfile(root) else fs.find(root)
    except FileNotFoundError:
        return sensitive.SEGMENT
    for name in names:
        if name.rsplit("/", 1)[-1] == INDEX_NAME:
            with contextlib.suppress(OSError):
                if FORMAT.encode() in bytes(fs.cat_file(name, start=0, end=64)):
                    return SEALED_SEGMENT
    return sensitive.SEGMENT


def _commit_index(fs: AbstractFileSystem, dpath: str, body: bytes) -> None:
    target = f"{dpath}/{INDEX_NAME}"
    if isinstance(fs, LocalFileSystem):
        tmp = f"{dpath}/.{INDEX_NAME}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    else:  # one PUT: S3 and ec:// make a single object write atomic
        fs.pipe_file(target, body)


class ShardedDataset:
    """Random access by index or key, and ordered/shuffled iteration, over a packed dataset.

    Local shards are memory-mapped once per process and read by slicing the map: a sample costs an
    index lookup and one copy, no system call. Remote shards (s3://, ec://, a cache in front) are
    read by one ranged read per sample through a file kept open per shard.

    ``verify`` chooses how CRC32C is checked:

    * ``"shard"``: once per shard and process, on first touch, over the whole memory-mapped shard
      against the CRC that :func:`pack` stored in the index (C code, ~GB/s), plus a vectorised check
      that every record header matches the index. Samples are then served with no per-sample check.
      A shard that fails drops to per-record checks, so its intact samples stay readable and the
      damaged one raises :class:`CorruptRecord` naming its key. The first sample of each shard costs
      a pass over that shard (a full read if it is not in the page cache).
    * ``"record"``: both CRCs of each record on every read (what remote shards always get).
    * ``True`` (default): ``"shard"`` where possible (local, index has shard CRCs), else ``"record"``.
    * ``False``: no checks.

    Encrypted (sensitive) shard sets are read the same way, see the module docstring: each sample
    decrypts only the segments it spans, AES-GCM authenticates them on every read whatever
    ``verify`` says, and ``verify=True`` means per-record CRCs there. ``data_key`` is the dataset's
    :class:`~modelplane.data.sensitive.DataKey` or a provider of it (a ``KeyReleaseClient``); by
    default the key is asked of the control plane with this job's credential
    (``$MODELPLANE_API_URL``, ``$MODELPLANE_JOB_TOKEN``), and a process without one is refused.
    Released keys travel with the dataset when it is pickled into DataLoader workers.
    """

    def __init__(self, url: str, *, fs: AbstractFileSystem | None = None,
                 storage_options: dict[str, Any] | None = None, verify: bool | VerifyMode = True,
                 data_key: DataKey | KeyProvider | None = None) -> None:
        if verify not in (True, False, "shard", "record"):
            raise DataError(f"verify={verify!r} is not a verification mode.", field="verify",
                            hint="Use True, False, 'shard' or 'record'.")
        self.fs, self.path = _fs(url, fs, storage_options)
        self.url = url
        self.verify = verify
        self._keys_from = sensitive.key_provider(data_key)
        self._data_keys: dict[str, DataKey] = {}
        where = f"{url}/{INDEX_NAME}"
        try:
            raw = bytes(self.fs.cat_file(f"{self.path}/{INDEX_NAME}"))
        except FileNotFoundError:
            raise DataError(f"{url!r} is not a packed dataset (no {INDEX_NAME}).", field="path",
                            hint="Create one with `modelplane data pack SRC DEST`.") from None
        self.encryption: Header | None = sensitive.parse_header(raw, where)
        """The index's encryption header (its dataset URI and key id), None for a plain shard set."""
        if self.encryption is not None:
            raw = self._open_index(raw, self.encryption, where)
        try:
            index = json.loads(raw)
        except ValueError:
            raise DataError(f"{where} is not JSON.", field="path",
                            hint="The index is damaged; re-pack the dataset.") from None
        fmt = index.get("format") if isinstance(index, dict) else None
        if fmt != FORMAT:
            raise DataError(f"{url!r} has format {fmt!r}, expected {FORMAT!r}.", field="path")
        self.shards: list[dict[str, Any]] = index["shards"]
        self.keys: list[str] = index["keys"]
        self._n = len(self.keys)
        # array('q'): compact like numpy, but indexing yields Python ints ~5x faster per sample.
        # _start/_end: where the payload lies (past the 12-byte header), so a read is one slice.
        self._shard = array("q", index["shard"])
        self._offset = array("q", index["offset"])
        self._length = array("q", index["length"])
        start = np.asarray(index["offset"], dtype=np.int64) + tfrecord.HEADER.size
        self._start = array("q", start.tobytes())
        self._end = array("q", (start + np.asarray(index["length"], dtype=np.int64)).tobytes())
        self._by_key: dict[str, int] | None = None
        self._local = isinstance(self.fs, LocalFileSystem)
        self._shard_checks = (self._local and verify in (True, "shard")
                              and all("crc32c" in s for s in self.shards))
        if verify == "shard" and not self._shard_checks:
            raise DataError(f"verify='shard' needs local shards packed with shard CRCs; {url!r} has not.",
                            field="verify", hint="Use verify='record' (or True to choose), or re-pack.")
        self._record_checks = bool(verify) and not self._shard_checks
        self._reset_handles()
        self._lock = threading.Lock()

    def _reset_handles(self) -> None:
        m = len(self.shards)
        # _fast[s]: the shard's map once it needs no per-sample check (None until then / never).
        self._fast: list[mmap.mmap | None] = [None] * m
        self._maps: list[mmap.mmap | None] = [None] * m
        self._checked = [False] * m  # mapped (and shard-checked) in this process
        self._files: dict[int, Any] = {}
        # _sealed[s]: an encrypted shard's plaintext reader and whether its records get CRC checks.
        self._sealed: dict[int, tuple[SealedFile, bool]] = {}
        self._segment_cache = SegmentCache()
        self._pid = os.getpid()

    # ------------------------------------------------------------------ sensitive shard sets
    def _key(self, header: Header, where: str) -> DataKey:
        key = self._data_keys.get(header.uri)
        if key is None:
            try:
                key = self._keys_from(header.uri)
            except KeyReleaseDenied as exc:
                raise KeyReleaseDenied(f"packed dataset {self.url} is sensitive and its key was refused: "
                                       f"{exc.message}", hint=exc.hint or ACCESS_HINT) from None
            self._data_keys[header.uri] = key
        if key.key_id != header.key_id:
            raise SensitiveDataError(
                f"the key given for sensitive dataset {header.uri} ({self.url}) is {key.key_id}, but {where} was "
                f"encrypted with key {header.key_id}", field="data_key", hint=ACCESS_HINT)
        return key

    def _open_index(self, blob: bytes, header: Header, where: str) -> bytes:
        key = self._key(header, where)
        try:
            index = SealedFile(lambda off, n: blob[off : off + n], len(blob), header, key, where)
            return index.pread(0, index.size)
        except SensitiveDataError as exc:
            raise SensitiveDataError(f"{exc.message}: the key {key.key_id} does not open the sensitive dataset "
                                     f"{header.uri}, or its index was altered",
                                     hint="restore index.json from the protected copy; a key from anywhere but "
                                          "the control plane may not be this dataset's: " + ACCESS_HINT) from None

    def _seal(self, header: Header | None, read_at: Callable[[int, int], bytes], size: int,
              name: str) -> SealedFile | None:
        """The plaintext reader of an encrypted shard (None for a plain one in a plain set)."""
        if header is None:
            if self.encryption is not None:
                raise SensitiveDataError(f"shard {name} of sensitive dataset {self.encryption.uri} is not encrypted",
                                         hint="it was replaced by a plaintext file, or protecting the dataset "
                                              "was interrupted; restore the shard from the protected copy")
            return None
        if self.encryption is not None and (header.uri, header.key_id) != (self.encryption.uri, self.encryption.key_id):
            raise SensitiveDataError(f"shard {name} is not part of sensitive dataset {self.encryption.uri}: it was "
                                     f"encrypted for {header.uri} with key {header.key_id}",
                                     hint="restore the shard from the protected copy")
        return SealedFile(read_at, size, header, self._key(header, name), name, self._segment_cache)

    def _sealed_ok(self, s: int, sealed: SealedFile) -> bool:
        """One pass over an encrypted shard, a segment at a time: its plaintext matches the index's
        size and whole-shard CRC (and every segment authenticates)."""
        meta = self.shards[s]
        if sealed.size != int(meta["bytes"]):
            return False
        crc = 0
        try:
            for k in range(sealed.segments):
                crc = tfrecord.crc32c(sealed.segment(k), crc)
        except SensitiveDataError:
            return False
        return crc == int(meta["crc32c"])

    def __len__(self) -> int:
        return self._n

    @property
    def shard_sizes(self) -> list[int]:
        return [int(s["records"]) for s in self.shards]

    def index_of(self, key: str) -> int:
        if self._by_key is None:
            self._by_key = {k: i for i, k in enumerate(self.keys)}
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"no sample with key {key!r} in {self.url}") from None

    def get(self, key: str) -> bytes:
        return self.read(self.index_of(key))

    def __getitem__(self, item: int | str) -> bytes:
        return self.get(item) if isinstance(item, str) else self.read(int(item))

    def read(self, i: int) -> bytes:
        """Payload of sample ``i`` (checked as ``verify`` says)."""
        if 0 <= i < self._n:
            mm = self._fast[self._shard[i]]
            if mm is not None:
                return mm[self._start[i] : self._end[i]]
            return self._read_slow(i)
        raise IndexError(f"sample {i} out of range for {self._n} samples")

    def read_view(self, i: int) -> memoryview:
        """Sample ``i`` without a copy: a view into the shard's map (remote shards: of a fresh copy).

        The view keeps the map alive; :meth:`close` leaves a map that still has views open to the GC.
        """
        if not 0 <= i < self._n:
            raise IndexError(f"sample {i} out of range for {self._n} samples")
        mm = self._fast[self._shard[i]]
        if mm is None:
            return memoryview(self._read_slow(i))
        return memoryview(mm)[self._start[i] : self._end[i]]

    def read_many(self, indices: Iterable[int] | np.ndarray) -> list[bytes]:
        """Payloads of many samples, in the order given (the DataLoader's batch path).

        One bounds check for the whole batch and one slice per sample once its shard is mapped and
        checked; remote shards (and record checks) take one ranged read per sample.
        """
        if isinstance(indices, np.ndarray):
            if indices.ndim != 1:
                raise DataError(f"read_many takes a flat sequence of indices, got shape {indices.shape}.",
                                field="indices")
            ids = indices.tolist()
        else:
            ids = indices if isinstance(indices, list) else list(indices)
        if ids:
            try:
                lo, hi = min(ids), max(ids)
                bad = lo < 0 or hi >= self._n
            except TypeError:
                raise DataError("read_many takes a flat sequence of integer indices.", field="indices") from None
            if bad:
                raise IndexError(f"sample {lo if lo < 0 else hi} out of range for {self._n} samples")
        fast, shard, start, end = self._fast, self._shard, self._start, self._end
        try:  # every shard already mapped and checked: one slice per sample, nothing else
            return [fast[shard[i]][start[i] : end[i]] for i in ids]
        except TypeError:  # a shard still to open (None is not sliceable), record checks, or encrypted
            pass
        if self._sealed or self.encryption is not None:
            # In shard and offset order, so each segment is decrypted once per batch (the cache
            # keeps the last), then put back in the order asked.
            got: list[bytes] = [b""] * len(ids)
            for j in sorted(range(len(ids)), key=lambda j: (shard[ids[j]], start[ids[j]])):
                i = ids[j]
                mm = fast[shard[i]]
                got[j] = self._read_slow(i) if mm is None else mm[start[i] : end[i]]
            return got
        out: list[bytes] = []
        for i in ids:
            mm = fast[shard[i]]
            out.append(self._read_slow(i) if mm is None else mm[start[i] : end[i]])
        return out

    def _read_slow(self, i: int) -> bytes:
        s = self._shard[i]
        verify = bool(self.verify)
        if self._local:
            if not self._checked[s]:
                self._open_local(s)
        elif self._pid != os.getpid() or s not in self._files:
            self._open_remote(s)
        entry = self._sealed.get(s)
        if entry is not None:
            sealed, verify = entry
            try:
                buf = sealed.pread(self._offset[i], self._length[i] + tfrecord.OVERHEAD)
            except SensitiveDataError as exc:
                raise SensitiveDataError(f"sample {self.keys[i]!r} of {self.url}: {exc.message}",
                                         hint=exc.hint) from None
        elif self._local:
            mm = self._fast[s]
            if mm is not None:
                return mm[self._start[i] : self._end[i]]
            mm = self._maps[s]
            if mm is None:
                raise CorruptRecord(f"sample {self.keys[i]!r} of {self.url}: shard {self.shards[s]['name']} is empty.",
                                    hint="The shard was truncated; restore it from the store or re-pack.")
            off = self._offset[i]
            buf = mm[off : off + self._length[i] + tfrecord.OVERHEAD]
        else:
            buf = self._read_remote(s, self._offset[i], self._length[i] + tfrecord.OVERHEAD)
        try:
            return tfrecord.decode_record(buf, verify=verify)
        except CorruptRecord as exc:
            raise CorruptRecord(f"sample {self.keys[i]!r} of {self.url}: {exc.message}", hint=exc.hint) from None

    def _open_local(self, s: int) -> None:
        """Map shard ``s`` (once per process) and run its shard-level check if that is the mode."""
        with self._lock:
            if self._checked[s]:
                return
            mm = self._maps[s]
            name = f"{self.path}/{self.shards[s]['name']}"
            if mm is None:
                try:
                    f = open(name, "rb")  # noqa: SIM115 - closed just below, once mapped
                except FileNotFoundError:
                    raise DataError(f"shard {name!r} of {self.url} is missing.", field="path",
                                    hint="The dataset was moved or damaged; restore it or re-pack.") from None
                with f:
                    size = os.fstat(f.fileno()).st_size
                    mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
                self._maps[s] = mm
            if mm is None:  # an empty shard holds no records, so nothing can be read from it
                self._checked[s] = True
                return
            sealed = self._seal(sensitive.parse_header(mm, name), _map_reader(mm), len(mm), name)
            if sealed is not None:  # segments are read whole: the kernel's read-ahead helps, so no madvise
                ok = self.verify == "shard" and self._sealed_ok(s, sealed)
                self._sealed[s] = (sealed, bool(self.verify) and not ok)
                self._checked[s] = True
                return
            if not self._shard_checks:
                with contextlib.suppress(AttributeError, OSError):  # random access: no read-ahead
                    mm.madvise(mmap.MADV_RANDOM)
            if (not self._shard_checks or self._shard_ok(s, mm)) and not self._record_checks:
                self._fast[s] = mm
            self._checked[s] = True

    def _shard_ok(self, s: int, mm: mmap.mmap) -> bool:
        """Whole-shard CRC matches the index, and every record header agrees with the index."""
        meta = self.shards[s]
        if len(mm) != int(meta["bytes"]) or tfrecord.crc32c(mm) != int(meta["crc32c"]):
            return False
        sel = np.flatnonzero(np.frombuffer(self._shard, dtype=np.int64) == s)
        if len(sel) != int(meta["records"]):
            return False
        offs = np.frombuffer(self._offset, dtype=np.int64)[sel]
        lens = np.frombuffer(self._length, dtype=np.int64)[sel]
        raw = np.frombuffer(mm, dtype=np.uint8)
        try:
            heads = raw[offs[:, None] + np.arange(8)].copy().view("<u8").ravel()
            ends = int((offs + lens + tfrecord.OVERHEAD).max(initial=0))
            return bool((heads == lens.astype(np.uint64)).all()) and ends <= len(mm)
        except IndexError:
            return False
        finally:
            del raw

    def _open_remote(self, shard: int) -> None:
        """Open a remote shard once (and, if it is encrypted, its plaintext reader)."""
        if self._pid != os.getpid():  # forked into a DataLoader worker: fsspec sessions are not ours
            self._files, self._sealed, self._pid = {}, {}, os.getpid()
        name = f"{self.path}/{self.shards[shard]['name']}"
        # Shard names are unique per pack run, so one open file per shard stays valid: no
        # metadata call per sample, and a cache in front pins the version once at open.
        with self._lock:
            if shard in self._files:
                return
            f = self.fs.open(name, "rb", cache_type="none")
            try:
                size = int(f.size) if getattr(f, "size", None) is not None else int(self.fs.size(name))
                sealed = self._seal(Header.read(f, name), lambda off, n: self._read_remote(shard, off, n), size, name)
            except BaseException:
                f.close()
                raise
            if sealed is not None:
                self._sealed[shard] = (sealed, bool(self.verify))
            self._files[shard] = f

    def _read_remote(self, shard: int, start: int, size: int) -> bytes:
        if self._pid != os.getpid() or shard not in self._files:
            self._open_remote(shard)
        with self._lock:
            f = self._files[shard]
            f.seek(start)
            return bytes(f.read(size))

    def order(self, *, epoch: int, seed: int = 0, shuffle: ShuffleMode = "global") -> np.ndarray:
        return epoch_order(len(self), seed=seed, epoch=epoch, mode=shuffle, shard_sizes=self.shard_sizes)

    def iter_epoch(self, *, epoch: int = 0, seed: int = 0, shuffle: ShuffleMode = "global", rank: int = 0,
                   world: int = 1, worker: int = 0, num_workers: int = 1, consumed: int = 0,
                   drop_last: bool = False, batch: int = ITER_BATCH) -> Iterator[tuple[str, bytes]]:
        """(key, payload) for this rank and worker, starting after ``consumed`` samples of the rank.

        Reads ``batch`` samples at a time with :meth:`read_many`; the order is unchanged.
        """
        stream = rank_stream(self.order(epoch=epoch, seed=seed, shuffle=shuffle), rank=rank, world=world,
                             drop_last=drop_last)
        ids = worker_stream(stream, worker=worker, num_workers=num_workers, consumed=consumed)
        keys = self.keys
        for b in range(0, len(ids), batch):
            chunk = ids[b : b + batch]
            yield from zip([keys[i] for i in chunk.tolist()], self.read_many(chunk), strict=True)

    def close(self) -> None:
        """Unmap and close what this process opened; a map with views still open is left to the GC."""
        for mm in self._maps:
            if mm is not None:
                with contextlib.suppress(BufferError, ValueError):
                    mm.close()
        for f in self._files.values():
            with contextlib.suppress(Exception):
                f.close()
        self._reset_handles()

    def __enter__(self) -> ShardedDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:  # plain try: at interpreter exit module globals (contextlib, os) may already be gone
            if self._pid == os.getpid():
                self.close()
        except Exception:  # a finaliser must not raise
            pass

    def __getstate__(self) -> dict[str, Any]:
        # Maps and open files stay behind; the receiving process opens its own (and re-checks shards).
        state = dict(self.__dict__)
        for k in ("_fast", "_maps", "_checked", "_files", "_sealed", "_segment_cache", "_lock", "_pid"):
            state.pop(k, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_handles()
        self._lock = threading.Lock()


def _map_reader(mm: mmap.mmap) -> Callable[[int, int], bytes]:
    def read_at(offset: int, n: int) -> bytes:
        return mm[offset : offset + n]

    return read_at
