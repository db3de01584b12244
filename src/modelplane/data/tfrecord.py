"""TFRecord framing: ``uint64 length | uint32 masked_crc(length) | data | uint32 masked_crc(data)``.

Byte-compatible with TensorFlow's and Beam's ``WriteToTFRecord``; CRC32C from ``google-crc32c`` (C,
SSE4.2) so no TensorFlow is needed. A record's payload is opaque bytes (here: one sample file).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Iterator
from functools import cache
from typing import BinaryIO

from modelplane.data._deps import require
from modelplane.data.errors import CorruptRecord

HEADER = struct.Struct("<QI")
FOOTER = struct.Struct("<I")
OVERHEAD = HEADER.size + FOOTER.size  # 16 bytes per record
_MASK_DELTA = 0xA282EAD8


@cache
def _crc32c() -> Callable[[bytes], int]:
    return require("google_crc32c", package="google-crc32c").value  # type: ignore[no-any-return]


@cache
def _crc32c_extend() -> Callable[[int, bytes], int]:
    return require("google_crc32c", package="google-crc32c").extend  # type: ignore[no-any-return]


def crc32c(data: bytes | mmap.mmap, crc: int = 0, *, chunk: int = 1 << 20) -> int:
    """Plain CRC32C of ``data``, continuing from ``crc``: the whole-shard checks kept in the index.

    google-crc32c's C code takes only ``bytes``, so a map is fed in 1 MiB copies (cache-sized, so
    the copy costs a fraction of the CRC, and memory stays flat for 512 MB shards).
    """
    extend = _crc32c_extend()
    if isinstance(data, bytes):
        return extend(crc, data)
    for a in range(0, len(data), chunk):
        crc = extend(crc, data[a : a + chunk])
    return crc


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC32C: rotate right by 15 bits and add a constant (avoids CRCs of CRCs)."""
    crc = _crc32c()(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def encode_record(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc(length)) + payload + FOOTER.pack(masked_crc(payload))


def decode_record(buf: bytes, *, verify: bool = True, where: str = "") -> bytes:
    """Payload of one whole framed record held in ``buf``."""
    if len(buf) < OVERHEAD:
        raise CorruptRecord(f"record {where} is truncated ({len(buf)} bytes).", hint="Re-pack the dataset.")
    length, length_crc = HEADER.unpack_from(buf, 0)
    if len(buf) != OVERHEAD + length:
        raise CorruptRecord(f"record {where} has length {length} but {len(buf) - OVERHEAD} payload bytes.",
                            hint="The index does not match the shard; re-pack the dataset.")
    payload = buf[HEADER.size : HEADER.size + length]
    if verify:
        (data_crc,) = FOOTER.unpack_from(buf, HEADER.size + length)
        if masked_crc(buf[:8]) != length_crc or masked_crc(payload) != data_crc:
            raise CorruptRecord(f"record {where} failed its CRC32C check.",
                                hint="The shard is damaged; restore it from the store or re-pack.")
    return payload


def iter_records(f: BinaryIO, *, verify: bool = True) -> Iterator[bytes]:
    """Stream payloads from a TFRecord file (e.g. one written by TensorFlow or Beam)."""
    offset = 0
    while True:
        head = f.read(HEADER.size)
        if not head:
            return
        if len(head) < HEADER.size:
            raise CorruptRecord(f"truncated record header at byte {offset}.", hint="The file is incomplete.")
        (length,) = struct.unpack_from("<Q", head)
        rest = f.read(length + FOOTER.size)
        yield decode_record(head + rest, verify=verify, where=f"at byte {offset}")
        offset += OVERHEAD + length
