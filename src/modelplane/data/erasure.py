"""Erasure-coding profile and codec: a thin, validated wrapper over pyeclib (liberasurecode + ISA-L).

pyeclib aborts the whole process on some malformed inputs (a memoryview, a fragment with a damaged
header), so this wrapper only ever hands it ``bytes`` and callers only pass fragments whose CRC has
already been checked.

The codes are systematic: data fragment ``i`` of a stripe is a fixed-size header followed by stripe
bytes ``[i*B, (i+1)*B)`` (zero-padded past the end). :attr:`Codec.header_size` records that layout,
verified once per codec against pyeclib itself, so a store can read healthy data fragments straight
into the caller's buffer and call pyeclib only when a fragment is lost or corrupt. For full stripes of
``isa_l_rs_cauchy`` the store goes further and calls ISA-L itself (:class:`DirectEncoder`: parity and
rebuilding in place, no copies), after checking at start-up that it produces pyeclib's bytes exactly.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from modelplane.data._deps import require
from modelplane.data.errors import DataError, Unrecoverable

DEFAULT_EC_TYPE = "isa_l_rs_cauchy"
DEFAULT_STRIPE_SIZE = 1 << 20  # ISA-L Cauchy peaks at 64 KiB-1 MiB stripes here (ANCHORS.md, Data).

# liberasurecode's fragment_header_t starts with idx, payload size, backend metadata size and the
# stripe's original length (little-endian, packed); the 32-bit magic sits at byte 59.
_HEADER_FIELDS = struct.Struct("<IIIQ")
_HEADER_MAGIC_AT = 59
_HEADER_MAGIC = 0xB0C5ECC
_HEADER_SIZE = 80


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
    3-4x the coding itself here (benchmarks/erasure.py). Raising the thresholds once per process
    keeps the memory reused. Opt out with MODELPLANE_EC_TUNE_MALLOC=0. Returns whether applied.
    """
    import ctypes
    import ctypes.util

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


def stripe_views(data: Any, stripe_size: int, start: int = 0,
                 stop: int | None = None) -> list[bytes | ctypes.Array[ctypes.c_char]]:
    """Consecutive stripes of bytes [start, stop) of a buffer as zero-copy inputs for :meth:`Codec.encode`.

    Why: pyeclib accepts only buffers without a release hook (``bytes``, ctypes arrays), so slicing
    a big object into ``bytes`` stripes copies every byte once more than the coding itself (a
    third of the encode time here). ctypes arrays at the buffer's address avoid that; they do not
    keep ``data`` alive, so the caller must hold it until the stripes are encoded. Read-only buffers
    other than ``bytes`` (whose address Python does not expose) are sliced into ``bytes``.
    """
    with memoryview(data) as raw, raw.cast("B") as mv:
        stop = len(mv) if stop is None else stop
        offsets = range(start, stop, stripe_size)
        if isinstance(data, bytes):
            address = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
        elif not mv.readonly and len(mv):
            address = ctypes.addressof(ctypes.c_char.from_buffer(mv))
        else:
            return [bytes(mv[o : min(o + stripe_size, stop)]) for o in offsets]
        assert address is not None
        return [(ctypes.c_char * min(stripe_size, stop - o)).from_address(address + o) for o in offsets]


@cache
def _isal_library() -> Any:
    """ISA-L as shipped inside the pyeclib wheel (or installed system-wide), or None."""
    import ctypes.util
    import glob

    pyeclib = require("pyeclib", package="pyeclib")
    here = os.path.dirname(os.path.dirname(os.path.abspath(str(pyeclib.__file__))))
    candidates = sorted(glob.glob(os.path.join(here, "pyeclib.libs", "libisal*.so*")))
    system = ctypes.util.find_library("isal")
    for path in [*candidates, *([system] if system else [])]:
        try:
            lib = ctypes.CDLL(path)
            for name in ("gf_gen_cauchy1_matrix", "ec_init_tables", "ec_encode_data", "gf_invert_matrix"):
                getattr(lib, name)
        except (OSError, AttributeError):
            continue
        lib.ec_encode_data.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                       ctypes.c_void_p, ctypes.c_void_p)
        lib.ec_encode_data.restype = None
        lib.gf_invert_matrix.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
        lib.gf_invert_matrix.restype = ctypes.c_int
        return lib
    return None


class DirectEncoder:
    """ISA-L's Cauchy parity computed in place, the way liberasurecode's ``isa_l_rs_cauchy`` does it.

    Why: through pyeclib, encoding a stripe copies it into aligned buffers and copies every fragment
    out again into new ``bytes``; that, not the arithmetic, is most of its cost (ISA-L's parity runs
    at tens of GB/s here, pyeclib's encode at 1-4). Data fragments of a systematic code are just the
    stripe cut in k, so a store can write them straight from the caller's buffer with the headers
    pyeclib would put on them, and only the m parity payloads are computed, by ``ec_encode_data``
    (through ctypes, so without the GIL). Used only after :meth:`Codec._probe_direct` found its output
    byte-identical to pyeclib's for the stripe size in use; pyeclib still decodes everything.
    """

    def __init__(self, lib: Any, k: int, m: int) -> None:
        self.k, self.m = k, m
        self._lib = lib
        self._matrix = (ctypes.c_ubyte * (k * (k + m)))()
        lib.gf_gen_cauchy1_matrix(self._matrix, k + m, k)
        self._tables = (ctypes.c_ubyte * (k * m * 32))()
        lib.ec_init_tables(k, m, ctypes.byref(self._matrix, k * k), self._tables)
        self._decode_tables: dict[tuple[tuple[int, ...], tuple[int, ...]], Any] = {}

    def rebuild(self, sources: Sequence[int], source_addresses: Sequence[int], lost: Sequence[int],
                lost_addresses: Sequence[int], payload: int) -> None:
        """Recompute the payloads of lost data fragments ``lost`` from k intact fragments
        ``sources`` (indices; payload addresses alongside) straight into ``lost_addresses``.

        The standard ISA-L recipe: invert the k x k rows of the generator matrix that the sources
        were made with; row i of the inverse rebuilds data fragment i.
        """
        k = self.k
        key = (tuple(sources), tuple(lost))
        tables = self._decode_tables.get(key)
        if tables is None:
            rows = (ctypes.c_ubyte * (k * k))()
            for r, row in enumerate(sources):
                for c in range(k):
                    rows[r * k + c] = self._matrix[row * k + c]
            inverse = (ctypes.c_ubyte * (k * k))()
            if self._lib.gf_invert_matrix(rows, inverse, k) != 0:
                raise Unrecoverable(f"fragments {list(sources)} cannot rebuild fragments {list(lost)}.",
                                    hint="This should not happen with a Cauchy code; report it.")
            decode = (ctypes.c_ubyte * (k * len(lost)))()
            for r, i in enumerate(lost):
                for c in range(k):
                    decode[r * k + c] = inverse[i * k + c]
            tables = (ctypes.c_ubyte * (k * len(lost) * 32))()
            self._lib.ec_init_tables(k, len(lost), decode, tables)
            if len(self._decode_tables) > 256:
                self._decode_tables.clear()
            self._decode_tables[key] = tables
        src = (ctypes.c_void_p * k)(*source_addresses)
        dst = (ctypes.c_void_p * len(lost))(*lost_addresses)
        self._lib.ec_encode_data(payload, k, len(lost), tables, src, dst)

    def parity(self, data_address: int, payload: int, parity_address: int) -> None:
        """Write the m parity payloads of the k data payloads at ``data_address`` (each ``payload``
        bytes, back to back) to ``parity_address`` (m payloads, back to back)."""
        data = (ctypes.c_void_p * self.k)(*(data_address + i * payload for i in range(self.k)))
        parity = (ctypes.c_void_p * self.m)(*(parity_address + j * payload for j in range(self.m)))
        self._lib.ec_encode_data(payload, self.k, self.m, self._tables, data, parity)


@cache
def available_ec_types() -> tuple[str, ...]:
    """EC backends whose shared libraries load in this environment (pyeclib's own probe)."""
    ec_iface = require("pyeclib.ec_iface", package="pyeclib")
    return tuple(ec_iface.VALID_EC_TYPES)


_PROBED: dict[ErasureProfile, tuple[int | None, DirectEncoder | None]] = {}


def _probe(profile: ErasureProfile) -> tuple[int | None, DirectEncoder | None] | None:
    """Layout and direct encoder found by an earlier codec of the same profile (probes take ~30 ms)."""
    return _PROBED.get(profile)


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
        probed = _probe(profile)
        if probed is None:  # first codec of this profile in this process
            self.header_size: int | None = self._probe_layout()
            self.direct: DirectEncoder | None = self._probe_direct(profile.stripe_size)
            _PROBED[profile] = (self.header_size, self.direct)
        else:
            self.header_size, self.direct = probed
        self._headers: dict[int, list[bytes]] = {}

    def headers(self, stripe_len: int) -> list[bytes]:
        """The k+m fragment headers pyeclib puts on a stripe of ``stripe_len`` bytes (they do not
        depend on the content: the probe checks that)."""
        if stripe_len not in self._headers:
            assert self.header_size is not None
            self._headers[stripe_len] = [f[: self.header_size] for f in self._driver.encode(bytes(stripe_len))]
        return self._headers[stripe_len]

    def direct_payload(self, stripe_len: int) -> int | None:
        """Payload bytes per fragment when a stripe of this length can be encoded directly, else None."""
        if self.direct is None or stripe_len != self.profile.stripe_size:
            return None
        return stripe_len // self.profile.k

    def _probe_direct(self, stripe_len: int) -> DirectEncoder | None:
        """A :class:`DirectEncoder` if its fragments equal pyeclib's for full stripes, else None."""
        k, m, h = self.profile.k, self.profile.m, self.header_size
        if (self.profile.ec_type != "isa_l_rs_cauchy" or h is None or stripe_len % k
                or os.environ.get("MODELPLANE_EC_DIRECT", "1") == "0"):
            return None
        lib = _isal_library()
        if lib is None:
            return None
        encoder = DirectEncoder(lib, k, m)
        payload = stripe_len // k
        for _ in range(2):  # two contents: headers must not depend on them
            data = os.urandom(stripe_len)
            expected = self._driver.encode(data)
            parity = ctypes.create_string_buffer(m * payload)
            encoder.parity(ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0, payload,
                           ctypes.addressof(parity))
            headers = [f[:h] for f in self._driver.encode(bytes(stripe_len))]
            got = [headers[i] + data[i * payload : (i + 1) * payload] for i in range(k)]
            got += [headers[k + j] + parity.raw[j * payload : (j + 1) * payload] for j in range(m)]
            if got != list(expected):
                return None
            # Decoding: lose the first min(k, m) data fragments and rebuild them from the rest.
            lost = list(range(min(k, m)))
            sources = [i for i in range(k + m) if i not in lost][:k]
            frags = got
            addresses = [ctypes.cast(ctypes.c_char_p(frags[i]), ctypes.c_void_p).value or 0 for i in sources]
            rebuilt = ctypes.create_string_buffer(len(lost) * payload)
            encoder.rebuild(sources, [a + h for a in addresses], lost,
                            [ctypes.addressof(rebuilt) + r * payload for r in range(len(lost))], payload)
            if rebuilt.raw != data[: len(lost) * payload]:
                return None
        return encoder

    def _probe_layout(self) -> int | None:
        """The data-fragment header size if fragments have the layout described above, else None.

        Why a probe rather than a constant: the layout belongs to liberasurecode, not to us; if a
        different version or backend lays fragments out otherwise, readers fall back to pyeclib's
        decode for every stripe (slower, still correct) instead of returning wrong bytes.
        """
        k, h = self.profile.k, _HEADER_SIZE
        for length in (1, 4097, 65_539):
            data = os.urandom(length)
            frags = self._driver.encode(data)
            payload = len(frags[0]) - h
            if payload < 1 or any(len(f) != len(frags[0]) for f in frags):
                return None
            if not all(self.header_matches(frags[i][:h], i, payload, length, header_size=h) for i in range(k)):
                return None
            if b"".join(f[h:] for f in frags[:k])[:length] != data:
                return None
        return h

    def header_matches(self, header: bytes | bytearray | memoryview, index: int, payload: int, stripe_len: int,
                       *, header_size: int | None = None) -> bool:
        """Whether a data fragment's header says: fragment ``index``, ``payload`` bytes, of a stripe of
        ``stripe_len`` bytes, in the layout the fast path assumes."""
        if len(header) != (header_size or self.header_size):
            return False
        idx, size, backend_meta, orig = _HEADER_FIELDS.unpack_from(header, 0)
        (magic,) = struct.unpack_from("<I", header, _HEADER_MAGIC_AT)
        return (idx, size, backend_meta, orig, magic) == (index, payload, 0, stripe_len, _HEADER_MAGIC)

    def encode(self, stripe: bytes | ctypes.Array[ctypes.c_char]) -> list[bytes]:
        """Fragments in index order 0..k+m-1 (0..k-1 carry the data, systematic).

        ``stripe`` is ``bytes`` or a ctypes char array (see :func:`stripe_views`): pyeclib reads
        either in place; anything else is copied into ``bytes`` first.
        """
        if not isinstance(stripe, bytes | ctypes.Array):
            stripe = bytes(stripe)
        return list(self._driver.encode(stripe))

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
