"""Checkpoint storage addressed by URL: a local path or anything fsspec opens (s3://, gs://, memory://).

Why fsspec and not our own client: one interface covers local disk and every object store, and
torch.distributed.checkpoint ships an fsspec writer/reader that we reuse for the tensor data.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import Any

from modelplane.train.errors import MissingDependency


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError as exc:  # pragma: no cover
        raise MissingDependency(
            "fsspec is needed to write checkpoints to object storage.", hint="pip install 'modelplane[data]'"
        ) from exc
    return fsspec


def is_local(url: str) -> bool:
    """True for a plain path or file:// URL: those use DCP's faster local FileSystemWriter."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


@dataclass
class Store:
    """A folder of checkpoints. Every method takes paths relative to the root URL."""

    url: str
    storage_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        if is_local(self.url):
            self.url = os.path.abspath(local_path(self.url))
            self.fs = _fsspec().filesystem("file")
            self.root = self.url
        else:
            fs, root = _fsspec().core.url_to_fs(self.url, **(self.storage_options or {}))
            self.fs = fs
            self.root = root.rstrip("/")

    @property
    def local(self) -> bool:
        return is_local(self.url)

    def full(self, rel: str) -> str:
        """URL of a path under the root, in the form DCP's writers accept."""
        if not rel:
            return self.url
        return posixpath.join(self.url, rel) if not self.local else os.path.join(self.url, rel)

    def _path(self, rel: str) -> str:
        return posixpath.join(self.root, rel) if rel else self.root

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self._path(rel)))

    def makedirs(self, rel: str) -> None:
        self.fs.makedirs(self._path(rel), exist_ok=True)

    def listdir(self, rel: str = "") -> list[str]:
        """Names directly under rel; empty when the folder does not exist yet."""
        path = self._path(rel)
        if not self.fs.exists(path):
            return []
        out = []
        for entry in self.fs.ls(path, detail=False):
            out.append(posixpath.basename(str(entry).rstrip("/")))
        return sorted(out)

    def size(self, rel: str) -> int:
        return int(self.fs.size(self._path(rel)))

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open(self._path(rel), "rb") as fh:
            return bytes(fh.read())

    def open_read(self, rel: str) -> Any:
        return self.fs.open(self._path(rel), "rb")

    def write_bytes(self, rel: str, data: bytes, *, atomic: bool = False, durable: bool = False) -> None:
        """Write a small file. ``atomic``: readers see the old state or the whole new file, never a
        part; ``durable``: on local disk, fsync before returning (an object-store PUT is both)."""
        path = self._path(rel)
        if self.local:
            target = f"{path}.tmp-{os.getpid()}" if atomic else path
            with open(target, "wb") as fh:
                fh.write(data)
                fh.flush()
                if durable or atomic:
                    os.fsync(fh.fileno())
            if atomic:
                os.replace(target, path)  # POSIX rename is atomic within one folder
            return
        with self.fs.open(path, "wb") as fh:
            fh.write(data)

    def remove(self, rel: str) -> None:
        path = self._path(rel)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
