"""Kubernetes-style quantities ("500m", "2", "16Gi") turned into integers.

Integers (millicores, MiB, milli-accelerators) keep the scheduler's arithmetic exact: a pool never
drifts into over-allocation through float rounding.
"""

from __future__ import annotations

import re

from modelplane.core.errors import InvalidSpec

_MEM_UNITS: dict[str, float] = {
    "": 1 / (1024 * 1024),
    "Ki": 1 / 1024,
    "Mi": 1,
    "Gi": 1024,
    "Ti": 1024 * 1024,
    "K": 1000 / (1024 * 1024),
    "k": 1000 / (1024 * 1024),
    "M": 1000**2 / (1024 * 1024),
    "G": 1000**3 / (1024 * 1024),
    "T": 1000**4 / (1024 * 1024),
}
_MEM_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(Ki|Mi|Gi|Ti|K|k|M|G|T|)\s*$")
_CPU_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(m?)\s*$")


def parse_cpu_milli(value: str | int | float, field: str = "cpu") -> int:
    """'500m' -> 500, '2' -> 2000, 1.5 -> 1500."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise InvalidSpec(f"{field} must not be negative, got {value}", field=field)
        return round(value * 1000)
    m = _CPU_RE.match(str(value))
    if not m:
        raise InvalidSpec(
            f"{field}: cannot read CPU quantity {value!r}",
            hint="write cores as '2' or '1.5', or millicores as '500m'",
            field=field,
        )
    number = float(m.group(1))
    return round(number) if m.group(2) == "m" else round(number * 1000)


def parse_memory_mib(value: str | int | float, field: str = "memory") -> int:
    """'16Gi' -> 16384; a bare number counts bytes, as in Kubernetes."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise InvalidSpec(f"{field} must not be negative, got {value}", field=field)
        return int(-(-value // (1024 * 1024)))
    m = _MEM_RE.match(str(value))
    if not m:
        raise InvalidSpec(
            f"{field}: cannot read memory quantity {value!r}",
            hint="use a Kubernetes quantity such as '512Mi', '16Gi' or '2G'",
            field=field,
        )
    mib = float(m.group(1)) * _MEM_UNITS[m.group(2)]
    return int(-(-mib // 1))


def parse_accelerators(value: str | int | float, field: str = "accelerators") -> tuple[int, int]:
    """An accelerator count -> (devices, milli per device).

    Below one, the request is a share of a single device (0.46 -> (1, 460)), as in the openb trace;
    from one up it must be whole devices (2 -> (2, 1000)).
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidSpec(
            f"{field}: {value!r} is not a number",
            hint="give a whole count (2) or a share of one device (0.5)",
            field=field,
        ) from None
    if number < 0:
        raise InvalidSpec(f"{field} must not be negative, got {value}", field=field)
    if number == 0:
        return 0, 0
    if number < 1:
        milli = round(number * 1000)
        if milli < 1:
            raise InvalidSpec(f"{field}: {value} is below one milli-device", field=field)
        return 1, milli
    if number != int(number):
        raise InvalidSpec(
            f"{field}: {value} mixes whole and fractional devices",
            hint="ask for whole devices (1, 2, 8) or a share of one device below 1 (0.25)",
            field=field,
        )
    return int(number), 1000


def format_milli(milli: int) -> str:
    """1500 -> '1.5', 2000 -> '2'."""
    if milli % 1000 == 0:
        return str(milli // 1000)
    return f"{milli / 1000:g}"
