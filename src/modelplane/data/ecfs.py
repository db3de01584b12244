"""The erasure-coded store as an fsspec filesystem, protocol ``ec://``.

Everything that speaks fsspec (pandas, s3fs-style code, our shards and cache) can then use it::

    fs = fsspec.filesystem("ec", root="/var/lib/modelplane/ec", k=4, m=2)
    fs.pipe("datasets/a/part-0", b"...")
    with fsspec.open("ec://datasets/a/part-0", ec={"root": "/var/lib/modelplane/ec"}) as f: ...

Paths are object keys. Directories are implied by key prefixes, as in S3. ``info()`` carries the
object's ``version`` (also under ``ETag``) so caches can key on it.
"""

from __future__ import annotations

import os
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from modelplane.data.ecstore import ErasureCodedStore, ObjectWriter, normalize_key
from modelplane.data.erasure import DEFAULT_EC_TYPE, DEFAULT_STRIPE_SIZE, ErasureProfile
from modelplane.data.errors import DataError, ObjectNotFound

PROTOCOL = "ec"


class ErasureCodedFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """fsspec facade over :class:`ErasureCodedStore`; one instance per (root/disks, profile)."""

    protocol = (PROTOCOL,)
    root_marker = ""

    def __init__(
        self,
        root: str | None = None,
        disks: list[str] | None = None,
        k: int = 4,
        m: int = 2,
        ec_type: str = DEFAULT_EC_TYPE,
        stripe_size: int = DEFAULT_STRIPE_SIZE,
        durable: bool = True,
        repair_on_read: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        profile = ErasureProfile(k=k, m=m, ec_type=ec_type, stripe_size=stripe_size)
        root = root or os.environ.get("MODELPLANE_EC_ROOT")
        if disks:
            self.store = ErasureCodedStore(list(disks), profile, durable=durable, repair_on_read=repair_on_read)
        elif root:
            self.store = ErasureCodedStore.at_root(root, profile, durable=durable, repair_on_read=repair_on_read)
        else:
            raise DataError(
                "the ec:// filesystem needs a root directory or a list of disk directories.",
                hint="Pass root=/path (or disks=[...] with k+m entries), or set MODELPLANE_EC_ROOT.",
                field="root",
            )

    @classmethod
    def _strip_protocol(cls, path: str | list[str]) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3 :]
        return path.strip("/")

    # ---- metadata --------------------------------------------------------------------------------

    def _file_info(self, key: str) -> dict[str, Any]:
        m = self.store.head(key)
        return {
            "name": key,
            "size": m.size,
            "type": "file",
            "version": m.version,
            "ETag": m.version,
            "created": m.generation / 1e9,
            "mtime": m.generation / 1e9,
            "metadata": m.metadata,
        }

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        key = self._strip_protocol(path)
        if key:
            try:
                return self._file_info(normalize_key(key))
            except ObjectNotFound:
                pass
            files, dirs = self.store.listdir(key)
            if files or dirs:
                return {"name": key, "size": 0, "type": "directory"}
            raise FileNotFoundError(path)
        return {"name": "", "size": 0, "type": "directory"}

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        key = self._strip_protocol(path)
        if key:
            try:
                info = self._file_info(normalize_key(key))
                return [info] if detail else [info["name"]]
            except ObjectNotFound:
                pass
        files, dirs = self.store.listdir(key)
        if not files and not dirs and key:
            raise FileNotFoundError(path)
        if not detail:
            return sorted(files + dirs)
        out = [{"name": d, "size": 0, "type": "directory"} for d in dirs]
        for f in files:
            try:
                out.append(self._file_info(f))
            except ObjectNotFound:  # deleted between listing and head
                continue
        return sorted(out, key=lambda e: e["name"])

    def ukey(self, path: str) -> str:
        return str(self.info(path)["version"])

    def checksum(self, path: str) -> int:
        return int(self.ukey(path), 16)

    def created(self, path: str) -> Any:
        import datetime

        return datetime.datetime.fromtimestamp(self.info(path)["created"], tz=datetime.UTC)

    modified = created

    # ---- data ------------------------------------------------------------------------------------

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        key = self._strip_protocol(path)
        try:
            return self.store.get(key, start or 0, end)
        except ObjectNotFound as exc:
            raise FileNotFoundError(path) from exc

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        key = self._strip_protocol(path)
        if mode == "create" and self.exists(key):
            raise FileExistsError(path)
        self.store.put(key, bytes(value))

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: Any = None,
        autocommit: bool = True,
        cache_options: Any = None,
        **kwargs: Any,
    ) -> ErasureCodedFile:
        key = self._strip_protocol(path)
        if mode == "rb":
            try:
                details = self._file_info(normalize_key(key))
            except ObjectNotFound as exc:
                raise FileNotFoundError(path) from exc
            return ErasureCodedFile(self, key, mode, block_size=block_size or self.store.profile.stripe_size,
                                    cache_type=kwargs.get("cache_type", "readahead"),
                                    cache_options=cache_options, size=details["size"], details=details)
        if mode not in ("wb", "xb"):
            raise NotImplementedError(f"ec:// supports modes rb, wb and xb, not {mode!r} (objects are immutable).")
        if mode == "xb" and self.exists(key):
            raise FileExistsError(path)
        return ErasureCodedFile(self, key, "wb", block_size=block_size or self.store.profile.stripe_size,
                                autocommit=autocommit)

    def _rm(self, path: str) -> None:
        key = self._strip_protocol(path)
        try:
            self.store.delete(key)
        except ObjectNotFound as exc:
            files, dirs = self.store.listdir(key)
            if not files and not dirs:
                raise FileNotFoundError(path) from exc

    def rm_file(self, path: str) -> None:
        self._rm(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        for p in reversed(self.expand_path(path, recursive=recursive, maxdepth=maxdepth)):
            if self.isfile(p):
                self._rm(p)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Directories are implied by object keys; nothing to create."""

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Directories are implied by object keys; nothing to create."""

    def rmdir(self, path: str) -> None:
        """Directories vanish with their last object."""

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        src = self._strip_protocol(path1)
        dst = self._strip_protocol(path2)
        w = self.store.writer(dst, self.store.head(src).metadata)
        try:
            size = self.store.head(src).size
            step = self.store.profile.stripe_size * 16
            for off in range(0, size, step):
                w.write(self.store.get(src, off, min(size, off + step)))
            w.commit()
        except BaseException:
            w.abort()
            raise


class ErasureCodedFile(AbstractBufferedFile):  # type: ignore[misc]
    """Reads fetch only the stripes a range touches; writes stream stripes and commit on close."""

    def __init__(self, fs: ErasureCodedFileSystem, path: str, mode: str = "rb", details: Any = None,
                 **kwargs: Any) -> None:
        self._details = details
        self._writer: ObjectWriter | None = None
        super().__init__(fs, path, mode, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        store: ErasureCodedStore = self.fs.store
        return store.get(self.path, start, end)

    def _initiate_upload(self) -> None:
        self._writer = self.fs.store.writer(self.path)

    def _upload_chunk(self, final: bool = False) -> bool:
        assert self._writer is not None
        with self.buffer.getbuffer() as view:  # no copy: the writer copies each stripe once anyway
            self._writer.write(view)
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        if self._writer is None:  # nothing flushed yet: an empty or tiny object
            self._initiate_upload()
        assert self._writer is not None
        self._writer.commit()

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.abort()
        self._writer = None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # A failure inside the with-block must not commit a partial object (fsspec's default does).
        if exc_type is not None and self.mode != "rb":
            self.discard()
            self.closed = True
            return
        self.close()


def register() -> None:
    """Make ``ec://`` known to fsspec (idempotent)."""
    import fsspec

    fsspec.register_implementation(PROTOCOL, "modelplane.data.ecfs.ErasureCodedFileSystem", clobber=True)
