"""How many bytes each storage tier holds, per dataset and team: measured where the bytes are.

Nothing records storage as it is written, so the cost report walks the tiers when asked: a local
directory (datasets on SSD, or a hot-cache directory), an erasure-coded store root (logical size
from each committed manifest, raw size = its k+m fragment files), and a bucket (each object's size
and S3 storage class). Prices live in ``core.storage_cost``; this module only counts.

Attribution: an object under ``teams/<team>/<name>/`` belongs to dataset ``teams/<team>/<name>`` of
team ``<team>``; an erasure-coded object's ``team`` metadata wins over its path; anything else is its
first two path components, of no team. A cache directory is one dataset (its blocks are content-
hashed: which dataset they came from is not recoverable, and the cache is shared).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelplane.core.storage_cost import EC, HOT, S3_IA, S3_STANDARD, UNATTRIBUTED, StoredBytes
from modelplane.data.errors import DataError

SOURCE_KINDS = ("hot", "cache", "ec", "s3")
CACHE_DATASET = "(hot cache)"
UNREFERENCED = "(unreferenced fragments)"
# S3 storage classes priced as Standard-IA: the infrequent-access ones, and the archive ones (an upper bound).
IA_CLASSES = frozenset({"STANDARD_IA", "ONEZONE_IA", "GLACIER", "GLACIER_IR", "DEEP_ARCHIVE"})


@dataclass(frozen=True)
class Source:
    """One place to measure: ``kind`` is hot (a dataset directory), cache, ec (a store root) or s3 (any
    fsspec URL; the storage class, where the server reports one, picks the S3 tier)."""

    kind: str
    url: str


def parse_sources(entries: Iterable[str]) -> list[Source]:
    """``KIND=URL`` entries, as written in the ``storage_sources`` setting."""
    out = []
    for entry in entries:
        kind, sep, url = entry.partition("=")
        kind, url = kind.strip(), url.strip()
        if not sep or kind not in SOURCE_KINDS or not url:
            raise DataError(f"cannot read the storage source {entry!r}",
                            hint=f"write KIND=URL with KIND one of {', '.join(SOURCE_KINDS)}, "
                            "e.g. ec=/var/lib/modelplane/ec or s3=s3://bucket/datasets", field="storage_sources")
        out.append(Source(kind, url))
    return out


def attribute(key: str, team: str | None = None, depth: int = 2) -> tuple[str, str]:
    """(dataset, team) of an object key relative to its tier's root."""
    parts = [p for p in key.strip("/").split("/") if p]
    if len(parts) >= 3 and parts[0] == "teams":
        return "/".join(parts[:3]), team or parts[1]
    prefix = parts[:depth] if len(parts) > depth else parts[:-1] or parts
    return "/".join(prefix) or ".", team or UNATTRIBUTED


class _Tally:
    """Sums (logical, stored) bytes per (tier, dataset, team)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], list[int]] = {}

    def add(self, tier: str, dataset: str, team: str, logical: int, stored: int) -> None:
        row = self.rows.setdefault((tier, dataset, team), [0, 0])
        row[0] += logical
        row[1] += stored

    def items(self) -> list[StoredBytes]:
        return [StoredBytes(t, d, team, lg, st) for (t, d, team), (lg, st) in sorted(self.rows.items())]


def _existing_dir(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"the {what} {p} is not a directory", hint="check the storage_sources setting",
                        field="storage_sources")
    return p


def measure_directory(root: str | os.PathLike[str], tier: str = HOT, *, dataset: str | None = None,
                      team: str | None = None) -> list[StoredBytes]:
    """Bytes of every file under ``root``, per dataset (all in ``dataset`` when given)."""
    base = _existing_dir(root, "directory")
    tally = _Tally()
    for dirpath, _, files in os.walk(base):
        for name in files:
            if name.startswith(".tmp-"):  # a write in progress, not yet held
                continue
            path = Path(dirpath) / name
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # evicted or replaced while we walked
                continue
            if dataset is not None:
                tally.add(tier, dataset, team or UNATTRIBUTED, size, size)
            else:
                ds, owner = attribute(path.relative_to(base).as_posix(), team)
                tally.add(tier, ds, owner, size, size)
    return tally.items()


def _ec_profile(root: Path) -> Any:
    from modelplane.data.erasure import ErasureProfile

    for marker in sorted(root.glob("disk*/store.json")):
        info = json.loads(marker.read_text())
        return ErasureProfile(k=int(info["k"]), m=int(info["m"]), ec_type=str(info["ec_type"]))
    raise DataError(f"{root} holds no erasure-coded store (no disk*/store.json)",
                    hint="point the ec source at the store's root (the folder holding disk0, disk1, ...)",
                    field="storage_sources")


def measure_ec_store(root: str | os.PathLike[str]) -> list[StoredBytes]:
    """Per dataset: logical bytes of each committed object, and the raw bytes of its k+m fragment
    files; fragment files no manifest references (crashed writers, overwrites not yet collected)
    count as their own line, so what the disks hold is all accounted for."""
    from modelplane.data.ecstore import ErasureCodedStore
    from modelplane.data.errors import ObjectNotFound

    base = _existing_dir(root, "erasure-coded store root")
    store = ErasureCodedStore.at_root(base, _ec_profile(base), durable=False, repair_on_read=False)
    tally = _Tally()
    referenced = 0
    for key in store.walk_keys():
        try:
            manifest = store.head(key)
        except ObjectNotFound:  # deleted while we walked
            continue
        stored = manifest.fragment_file_size() * store.profile.n
        referenced += stored
        meta_team = manifest.metadata.get("team")
        ds, team = attribute(key, str(meta_team) if meta_team else None)
        tally.add(EC, ds, team, manifest.size, stored)
    on_disk = 0
    for disk in store.disks:
        for frag in (disk / "frags").glob("*/*"):
            try:
                on_disk += frag.stat().st_size
            except FileNotFoundError:
                continue
    if on_disk > referenced:
        tally.add(EC, UNREFERENCED, UNATTRIBUTED, 0, on_disk - referenced)
    return tally.items()


def s3_tier(storage_class: str | None) -> str:
    return S3_IA if (storage_class or "STANDARD").upper() in IA_CLASSES else S3_STANDARD


def measure_bucket(url: str, storage_options: Mapping[str, Any] | None = None) -> list[StoredBytes]:
    """Every object under ``url`` (s3://bucket/prefix, or any fsspec URL), tiered by storage class."""
    from fsspec.core import url_to_fs

    try:
        fs, root = url_to_fs(url, **dict(storage_options or {}))
        listing = fs.find(root, detail=True)
    except (ImportError, ValueError) as exc:
        raise DataError(f"cannot open {url}: {exc}", hint="for s3:// install s3fs (the data extra)",
                        field="storage_sources") from None
    except OSError as exc:
        raise DataError(f"cannot list {url}: {exc}", hint="check the bucket name, endpoint and credentials "
                        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3)",
                        field="storage_sources") from None
    tally = _Tally()
    root = root.rstrip("/")
    for path, info in listing.items():
        if info.get("type") == "directory":
            continue
        rel = path[len(root):].lstrip("/") if path.startswith(root) else path
        size = int(info.get("size") or 0)
        ds, team = attribute(rel)
        tally.add(s3_tier(info.get("StorageClass")), ds, team, size, size)
    return tally.items()


def measure(sources: Sequence[Source], storage_options: Mapping[str, Any] | None = None) -> list[StoredBytes]:
    """Everything the sources hold, as priced lines' inputs."""
    out: list[StoredBytes] = []
    for src in sources:
        if src.kind == "hot":
            out += measure_directory(src.url)
        elif src.kind == "cache":
            out += measure_directory(src.url, dataset=CACHE_DATASET)
        elif src.kind == "ec":
            out += measure_ec_store(src.url)
        else:
            out += measure_bucket(src.url, storage_options)
    return out
