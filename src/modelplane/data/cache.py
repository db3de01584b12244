"""Hot cache tiers (memory, local disk, Redis) in front of any fsspec filesystem.

Why keyed on version: every cache key embeds the object's ETag/version as the store reports it at
read time, so a rewritten object gets new keys and the old bytes are never served; they simply age
out of the LRU. The price is one metadata call (a HEAD on S3) per read or per opened file.

Objects are cached in fixed-size blocks so random access into a 512 MB shard caches only what is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from fsspec.utils import tokenize

from modelplane.data._deps import require
from modelplane.data.errors import DataError

DEFAULT_BLOCK_SIZE = 4 << 20


class ObjectChanged(DataError):
    """The object was rewritten while a version-pinned read was fetching it."""

    status_code = 409


class Tier(Protocol):
    """One cache level. ``get`` returns None on a miss; implementations bound their own size."""

    name: str

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...


class MemoryTier:
    """Process-local LRU bounded in bytes."""

    name = "memory"

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._items[key] = value
            self._bytes += len(value)
            while self._bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= len(evicted)

    @property
    def size_bytes(self) -> int:
        return self._bytes


class DiskTier:
    """Directory of block files shared by every process on the node; LRU by mtime, bounded in bytes.

    Writes go to a temporary name then ``os.replace``, so a reader in another process sees a whole
    block or none; a hit touches the file's mtime; eviction removes the oldest files first.
    """

    name = "disk"

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = 4 << 30) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._bytes = sum(e.stat().st_size for e in self._entries())
        self._lock = threading.Lock()

    def _entries(self) -> Iterable[os.DirEntry[str]]:
        for sub in os.scandir(self.dir):
            if sub.is_dir():
                with contextlib.suppress(FileNotFoundError):
                    yield from (e for e in os.scandir(sub.path) if not e.name.startswith(".tmp-"))

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.dir / digest[:2] / digest

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        with contextlib.suppress(FileNotFoundError):
            os.utime(path)
        return data

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(value)
        os.replace(tmp, path)
        with self._lock:
            self._bytes += len(value)
            if self._bytes > self.max_bytes:
                self._evict()

    def _evict(self) -> None:
        # Rescan: other processes share the directory, so our running total is only an estimate.
        entries = []
        for e in self._entries():
            with contextlib.suppress(FileNotFoundError):
                st = e.stat()
                entries.append((st.st_mtime_ns, st.st_size, e.path))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        target = int(self.max_bytes * 0.9)
        for _, size, path in entries:
            if total <= target:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size
        self._bytes = total

    @property
    def size_bytes(self) -> int:
        return self._bytes


class RedisTier:
    """Shared in-memory tier on a Redis server (bounded there by ``maxmemory`` + ``allkeys-lru``)."""

    name = "redis"

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "mp:cache:",
                 ttl_s: int | None = None, client: Any = None) -> None:
        redis = require("redis")
        self.client = client or redis.Redis.from_url(url)
        self.prefix = prefix
        self.ttl_s = ttl_s

    def get(self, key: str) -> bytes | None:
        value = self.client.get(self.prefix + key)
        return None if value is None else bytes(value)

    def put(self, key: str, value: bytes) -> None:
        self.client.set(self.prefix + key, value, ex=self.ttl_s)


TIERS: dict[str, Callable[..., Tier]] = {"memory": MemoryTier, "disk": DiskTier, "redis": RedisTier}


def make_tier(name: str, **options: Any) -> Tier:
    """Build a tier by registry name (for YAML/CLI configuration)."""
    try:
        factory = TIERS[name]
    except KeyError:
        raise DataError(f"unknown cache tier {name!r}.", hint=f"Use one of {sorted(TIERS)}.", field="tier") from None
    return factory(**options)


def object_version(fs: AbstractFileSystem, path: str) -> tuple[str, int]:
    """(version token, size) of an object as the store reports it now; never from a listing cache."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)
    info = fs.info(path)
    for field_name in ("ETag", "version", "VersionId", "etag"):
        value = info.get(field_name)
        if value:
            return str(value).strip('"'), int(info["size"])
    # Local and other stores without ETags: size + modification time (+ inode where offered).
    stamp = tokenize(info.get("size"), info.get("mtime"), info.get("LastModified"), info.get("created"),
                     info.get("ino"))
    return stamp, int(info["size"])


@dataclass
class CacheStats:
    hits: dict[str, int] = field(default_factory=dict)
    misses: int = 0
    bytes_from_store: int = 0


class HotCache:
    """Read-through block cache over ``fs``: tiers are tried in order and filled on the way back."""

    def __init__(self, fs: AbstractFileSystem, tiers: list[Tier], *, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        if not tiers:
            raise DataError("a hot cache needs at least one tier.", hint="e.g. [MemoryTier(), DiskTier(dir)]")
        self.fs = fs
        self.tiers = tiers
        self.block_size = block_size
        self.stats = CacheStats(hits={t.name: 0 for t in tiers})
        self._fs_token = tokenize(getattr(fs, "protocol", ""), getattr(fs, "storage_options", {}))

    def _key(self, path: str, version: str, block: int) -> str:
        return f"{self._fs_token}:{path}:{version}:{self.block_size}:{block}"

    def cat(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        """Bytes [start, end) of the current version of ``path``."""
        for _ in range(3):
            version, size = object_version(self.fs, path)
            try:
                return self.cat_version(path, version, size, start, end)
            except ObjectChanged:
                continue  # rewritten mid-read: start over on the new version
        raise ObjectChanged(f"{path} kept changing while being read.", hint="Retry when writers are done.")

    def cat_version(self, path: str, version: str, size: int, start: int | None = None,
                    end: int | None = None) -> bytes:
        """Like ``cat`` for a version the caller already checked (an open file, a shard index)."""
        start = 0 if start is None else (start if start >= 0 else max(0, size + start))
        end = size if end is None else (min(end, size) if end >= 0 else max(0, size + end))
        if start >= end:
            return b""
        bs = self.block_size
        parts = []
        for block in range(start // bs, (end - 1) // bs + 1):
            data = self._block(path, version, size, block)
            lo = max(start - block * bs, 0)
            hi = min(end - block * bs, len(data))
            parts.append(data[lo:hi])
        return b"".join(parts)

    def _block(self, path: str, version: str, size: int, block: int) -> bytes:
        key = self._key(path, version, block)
        for i, tier in enumerate(self.tiers):
            data = tier.get(key)
            if data is not None:
                self.stats.hits[tier.name] += 1
                for upper in self.tiers[:i]:
                    upper.put(key, data)
                return data
        self.stats.misses += 1
        lo = block * self.block_size
        data = bytes(self.fs.cat_file(path, start=lo, end=min(size, lo + self.block_size)))
        # The store has no read-at-version call in general, so confirm the version did not move
        # during the fetch; otherwise these bytes belong to a newer object and must not be cached.
        if object_version(self.fs, path)[0] != version:
            raise ObjectChanged(f"{path} was rewritten while a cached read was in progress.",
                                hint="Reopen the file to read the new version.")
        self.stats.bytes_from_store += len(data)
        for tier in self.tiers:
            tier.put(key, data)
        return data


class CachedFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """fsspec view of ``HotCache``: reads go through the tiers, metadata and writes go to the store."""

    protocol = ("mpcache",)
    cachable = False

    def __init__(self, cache: HotCache, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cache = cache
        self.target = cache.fs

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return dict(self.target.info(path, **kwargs))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        return list(self.target.ls(path, detail=detail, **kwargs))

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        return self.cache.cat(path, start, end)

    def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        self.target.pipe_file(path, value, **kwargs)

    def _rm(self, path: str) -> None:
        self.target.rm_file(path)

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
              cache_options: Any = None, **kwargs: Any) -> Any:
        if mode != "rb":
            return self.target.open(path, mode, **kwargs)
        version, size = object_version(self.target, path)
        return _CachedFile(self, path, version, size)


class _CachedFile(AbstractBufferedFile):  # type: ignore[misc]
    """Reads pinned to the version seen at open: a file never mixes bytes of two versions."""

    def __init__(self, fs: CachedFileSystem, path: str, version: str, size: int) -> None:
        self._version = version
        self._details = {"name": path, "size": size, "type": "file", "version": version}
        super().__init__(fs, path, "rb", block_size=fs.cache.block_size, cache_type="none", size=size)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return bytes(self.fs.cache.cat_version(self.path, self._version, self.size, start, end))
