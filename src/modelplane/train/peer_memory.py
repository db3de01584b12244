"""Peer-memory tier for the newest checkpoint: each rank's files also live in a peer host's RAM.

Why: recovery after a node failure is dominated by reading the checkpoint back; from an object
store that is seconds to minutes, from the memory of a surviving peer it is a memcpy over the
network (Gemini, SOSP'23). The object store stays the durable tier and the source of truth: the
memory copy is only used when it is at least as new as the newest durable checkpoint and every
file matches its manifest checksum.

The peer host's memory store is a Redis server (one per node in production; rank r mirrors to
node (r+1) mod n, so losing one node never loses both a rank and its copy). Keys, under a
namespace per job::

    <ns>:r<rank>:latest              -> "<step>:<token>"          the pointer readers follow
    <ns>:r<rank>:step:<step>:<token> -> hash {file name: bytes}   that rank's files (+ MANIFEST.json for rank 0)

A rank writes the whole hash under a fresh, never reused key in one HSET (atomic), then flips
``latest`` and deletes the previous key in one server-side script. A step key is never modified
after it is written, only deleted whole, so a reader that follows the pointer gets either a
complete step or nothing (then it follows the pointer again), never a mix; memory holds one step
per rank. The reader does not run a Lua script itself: copying tens of MB through Lua doubled the
read time here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelplane.train.errors import CheckpointError, MissingDependency

log = logging.getLogger("modelplane.train.peer_memory")

ENV_URLS = "MODELPLANE_PEER_MEMORY_URLS"

# Flip the pointer and free the previous step atomically (Redis runs a script without interleaving).
_FLIP = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
if old and old ~= ARGV[1] then redis.call('DEL', ARGV[2] .. old) end
return old
"""

_FETCH_ATTEMPTS = 5


class PeerMemoryError(CheckpointError):
    """The peer memory store could not be reached or refused a write."""


def urls_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """``MODELPLANE_PEER_MEMORY_URLS``: comma-separated redis:// URLs, one per node, in node order."""
    raw = (environ if environ is not None else os.environ).get(ENV_URLS, "")
    return [u.strip() for u in raw.split(",") if u.strip()]


def namespace_for(checkpoint_url: str) -> str:
    """One namespace per checkpoint root, so jobs sharing a node's store never collide."""
    return "modelplane:ckpt:" + hashlib.sha256(checkpoint_url.encode()).hexdigest()[:16]


@dataclass
class RankCopy:
    """What one rank's peer holds: the step its pointer names and that step's files."""

    rank: int
    step: int
    files: dict[str, bytes]


@dataclass
class PeerMemoryTier:
    """Mirror of the newest committed checkpoint in peer hosts' memory, addressed by URL list."""

    urls: Sequence[str]
    namespace: str
    timeout_s: float = 5.0
    _clients: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.urls:
            raise CheckpointError(
                "the peer-memory tier needs at least one store URL",
                field="peer_memory_urls",
                hint=f"pass redis://host:port/0 URLs, one per node, or set {ENV_URLS}",
            )
        for url in self.urls:
            if not url.startswith(("redis://", "rediss://", "unix://")):
                raise CheckpointError(
                    f"peer memory URL {url!r} is not a Redis URL",
                    field="peer_memory_urls",
                    hint="use redis://host:port/db (one Redis server per node)",
                )

    def peer_url(self, rank: int) -> str:
        """Rank r keeps its copy on node (r + 1) mod n: a different host than its own."""
        return self.urls[(rank + 1) % len(self.urls)]

    def _client(self, url: str) -> Any:
        if url not in self._clients:
            try:
                import redis
            except ImportError as exc:  # pragma: no cover - redis is in the data extra
                raise MissingDependency(
                    "the redis client is needed for the peer-memory checkpoint tier.",
                    hint="pip install 'modelplane[data]'",
                ) from exc
            self._clients[url] = redis.Redis.from_url(
                url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s
            )
        return self._clients[url]

    def _keys(self, rank: int) -> tuple[str, str]:
        base = f"{self.namespace}:r{rank}"
        return f"{base}:latest", f"{base}:step:"

    def put(self, rank: int, step: int, files: Mapping[str, bytes]) -> None:
        """Copy this rank's files of ``step`` to its peer and make them the newest there."""
        import redis

        if not files:
            raise CheckpointError(f"rank {rank} has no files to mirror for step {step}", field="files")
        latest, prefix = self._keys(rank)
        url = self.peer_url(rank)
        client = self._client(url)
        try:
            version = f"{step}:{uuid.uuid4().hex[:12]}"
            client.hset(f"{prefix}{version}", mapping=dict(files))  # one command: all or nothing
            client.eval(_FLIP, 1, latest, version, prefix)
        except redis.RedisError as exc:
            raise PeerMemoryError(
                f"could not mirror step {step} of rank {rank} to {url}: {exc}",
                field="peer_memory_urls",
                hint="the durable checkpoint is committed; check the peer's redis-server (memory limit, liveness)",
            ) from exc

    def fetch(self, rank: int) -> RankCopy | None:
        """The newest complete copy of ``rank``'s files, or None when its peer holds none."""
        import redis

        latest, prefix = self._keys(rank)
        url = self.peer_url(rank)
        client = self._client(url)
        try:
            for _ in range(_FETCH_ATTEMPTS):
                version = client.get(latest)
                if version is None:
                    return None
                flat = client.hgetall(prefix.encode() + version)
                if flat:  # else a newer step replaced this one between the two reads: follow again
                    files = {name.decode(): bytes(data) for name, data in flat.items()}
                    return RankCopy(rank=rank, step=int(version.split(b":", 1)[0]), files=files)
        except redis.RedisError as exc:
            raise PeerMemoryError(
                f"could not read rank {rank}'s copy from {url}: {exc}",
                field="peer_memory_urls",
                hint="resume falls back to the durable checkpoint",
            ) from exc
        raise PeerMemoryError(
            f"rank {rank}'s copy on {url} was replaced {_FETCH_ATTEMPTS} times while being read",
            field="peer_memory_urls",
            hint="resume falls back to the durable checkpoint",
        )

    def clear(self) -> None:
        """Drop every key of this namespace on every store (end of a job)."""
        for url in dict.fromkeys(self.urls):
            client = self._client(url)
            for key in client.scan_iter(match=f"{self.namespace}:*"):
                client.delete(key)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
