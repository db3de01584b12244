"""Erasure-coding profile and codec: a thin, validated wrapper over pyeclib (liberasurecode + ISA-L).

pyeclib aborts the whole process on some malformed inputs (a memoryview, a fragment with a damaged
header), so this wrapper only ever hands it ``bytes`` and callers only pass fragments whose CRC has
already been checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from modelplane.data._deps import require
from modelplane.data.errors import DataError, Unrecoverable

DEFAULT_EC_TYPE = "isa_l_rs_cauchy"
DEFAULT_STRIPE_SIZE = 1 << 20  # ISA-L Cauchy peaks at 64 KiB-1 MiB stripes here (ANCHORS.md, Data).


@dataclass(frozen=True)
class ErasureProfile:
    """k data + m parity fragments per stripe; any k of the k+m rebuild the stripe."""

    k: int = 4
    m: int = 2
    ec_type: str = DEFAULT_EC_TYPE
    stripe_size: int = DEFAULT_STRIPE_SIZE

    def __post_init__(self) -> None:
        if self.k < 1 or self.m < 1:
            raise DataError(
                f"erasure profile k={self.k}, m={self.m} is invalid: both must be at least 1.",
                hint="Use e.g. k=4, m=2 (survives two lost disks).",
                field="k" if self.k < 1 else "m",
            )
        if self.k + self.m > 32:
            raise DataError(
                f"k+m={self.k + self.m} fragments is more than the 32 this store supports.",
                hint="Use at most 32 disks, e.g. k=10, m=4.",
                field="k",
            )
        if self.stripe_size < 4096:
            raise DataError(
                f"stripe_size={self.stripe_size} is too small.",
                hint="Use 64 KiB to 4 MiB (default 1 MiB).",
                field="stripe_size",
            )

    @property
    def n(self) -> int:
        return self.k + self.m

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "m": self.m, "ec_type": self.ec_type, "stripe_size": self.stripe_size}


@cache
def tune_allocator() -> bool:
    """Keep freed buffers in glibc's heap instead of returning them to the kernel after each stripe.

    Why: every stripe allocates and frees a few MiB (fragments, decoded data); with glibc's default
    trim and mmap thresholds each cycle goes back to the kernel, and zero-filling fresh pages cost
    3-4x the coding itself here (benchmarks/data_ec.py). Raising the thresholds once per process
    keeps the memory reused. Opt out with MODELPLANE_EC_TUNE_MALLOC=0. Returns whether applied.
    """
    import ctypes
    import ctypes.util
    import os

    if os.environ.get("MODELPLANE_EC_TUNE_MALLOC", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 512 << 20)
    ok = ok and mallopt(m_top_pad, 64 << 20)
    return bool(ok)


@cache
def available_ec_types() -> tuple[str, ...]:
    """EC backends whose shared libraries load in this environment (pyeclib's own probe)."""
    ec_iface = require("pyeclib.ec_iface", package="pyeclib")
    return tuple(ec_iface.VALID_EC_TYPES)


class Codec:
    """Encodes one stripe into k+m fragments and rebuilds a stripe or lost fragments from any k."""

    def __init__(self, profile: ErasureProfile) -> None:
        ec_iface = require("pyeclib.ec_iface", package="pyeclib")
        if profile.ec_type not in available_ec_types():
            raise DataError(
                f"erasure-coding backend {profile.ec_type!r} is not available here.",
                hint=f"Pick one of {', '.join(available_ec_types())}, or run scripts/install-system-deps.sh.",
                field="ec_type",
            )
        self.profile = profile
        tune_allocator()
        self._driver = ec_iface.ECDriver(k=profile.k, m=profile.m, ec_type=profile.ec_type)

    def encode(self, stripe: bytes) -> list[bytes]:
        """Fragments in index order 0..k+m-1 (0..k-1 carry the data, systematic)."""
        return list(self._driver.encode(bytes(stripe)))

    def decode(self, fragments: Mapping[int, bytes]) -> bytes:
        """Rebuild a stripe from at least k intact fragments keyed by fragment index."""
        self._need_k(fragments)
        chosen = self._prefer_data(fragments)
        return bytes(self._driver.decode(chosen))

    def reconstruct(self, fragments: Mapping[int, bytes], missing: Sequence[int]) -> dict[int, bytes]:
        """Recompute the fragments at ``missing`` indices from at least k intact ones."""
        self._need_k(fragments)
        chosen = self._prefer_data(fragments)
        out = self._driver.reconstruct(chosen, list(missing))
        return dict(zip(missing, (bytes(f) for f in out), strict=True))

    def _need_k(self, fragments: Mapping[int, bytes]) -> None:
        if len(fragments) < self.profile.k:
            raise Unrecoverable(
                f"only {len(fragments)} intact fragments of {self.profile.n} remain; "
                f"{self.profile.k} are needed to rebuild the data.",
                hint="Restore the missing disks from a backup or replica; this object is lost otherwise.",
            )

    def _prefer_data(self, fragments: Mapping[int, bytes]) -> list[bytes]:
        # Data fragments first: with all k present liberasurecode just concatenates them.
        order = sorted(fragments)
        return [bytes(fragments[i]) for i in order[: self.profile.k]]
