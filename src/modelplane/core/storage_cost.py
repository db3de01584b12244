"""What stored bytes cost: bytes held per tier, team and dataset, priced per GB-month.

A tier is priced per byte *on the medium*: the erasure-coded store pays for its parity too (an object
of ``s`` bytes occupies ``s * (k+m)/k`` raw bytes), a cache pays for its blocks, S3 for its objects.
"GB" is 2**30 bytes, as AWS bills it, and a month is 730 hours, AWS's billing month.

Default prices (USD per GB-month) are public AWS list prices, us-east-1, as published in 2024-2025,
so a report means something before anyone configures their own:

============  ======  =====================================================================
tier          price   source
============  ======  =====================================================================
hot           0.08    EBS gp3 SSD (aws.amazon.com/ebs/pricing): hot cache, datasets on SSD
ec            0.045   EBS st1 throughput HDD (same page): the raw disks under the EC store
s3-standard   0.023   S3 Standard, first 50 TB (aws.amazon.com/s3/pricing)
s3-ia         0.0125  S3 Standard-Infrequent Access (same page)
============  ======  =====================================================================

Pure: what was measured, the prices and the window are arguments. Storage is measured at the edge
(``data.storage_usage``), not recorded over time, so a window's cost is the bytes held now held for
the whole window: an estimate, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from modelplane.core.errors import InvalidSpec

GIB = 1 << 30
SECONDS_PER_MONTH = 730 * 3600
HOT, EC, S3_STANDARD, S3_IA = "hot", "ec", "s3-standard", "s3-ia"
TIERS = (HOT, EC, S3_STANDARD, S3_IA)
DEFAULT_PRICES: Mapping[str, float] = {HOT: 0.08, EC: 0.045, S3_STANDARD: 0.023, S3_IA: 0.0125}
UNATTRIBUTED = "(unattributed)"


@dataclass(frozen=True)
class StoragePrices:
    """USD per GB-month for each tier."""

    per_gb_month: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, float]) -> StoragePrices:
        """The defaults with some tiers repriced (from the settings); unknown tiers and negative or
        non-finite prices are refused, so a typo cannot silently price a tier at the default."""
        prices = dict(DEFAULT_PRICES)
        for tier, price in overrides.items():
            if tier not in TIERS:
                raise InvalidSpec(f"unknown storage tier {tier!r} in the storage prices",
                                  hint=f"price one of: {', '.join(TIERS)}", field="storage_prices")
            if not isinstance(price, int | float) or not math.isfinite(price) or price < 0:
                raise InvalidSpec(f"the price of storage tier {tier!r} must be a number >= 0, got {price!r}",
                                  hint="USD per GB-month, e.g. 0.023", field="storage_prices")
            prices[tier] = float(price)
        return cls(prices)

    def price(self, tier: str) -> float:
        try:
            return self.per_gb_month[tier]
        except KeyError:
            raise InvalidSpec(f"no price for storage tier {tier!r}", hint=f"price one of: {', '.join(TIERS)}",
                              field="storage_prices") from None


@dataclass(frozen=True)
class StoredBytes:
    """Bytes of one dataset on one tier: as the user sees them and as the medium holds them."""

    tier: str
    dataset: str
    team: str
    logical_bytes: int
    stored_bytes: int


def ec_stored_bytes(logical_bytes: int, k: int, m: int) -> int:
    """Raw bytes an erasure-coded object of ``logical_bytes`` occupies on its k+m disks."""
    if k < 1 or m < 0:
        raise InvalidSpec(f"an erasure profile needs k >= 1 and m >= 0, got k={k}, m={m}",
                          hint="use the profile the store was created with", field="profile")
    return math.ceil(logical_bytes * (k + m) / k)


@dataclass
class StorageLine:
    logical_bytes: int = 0
    stored_bytes: int = 0
    gb_months: float = 0.0
    cost: float = 0.0

    def add(self, other: StorageLine) -> None:
        self.logical_bytes += other.logical_bytes
        self.stored_bytes += other.stored_bytes
        self.gb_months += other.gb_months
        self.cost += other.cost


@dataclass
class StorageReport:
    seconds: float
    by_tier: dict[str, StorageLine] = field(default_factory=dict)
    by_team: dict[str, StorageLine] = field(default_factory=dict)
    by_dataset: dict[tuple[str, str, str], StorageLine] = field(default_factory=dict)  # (tier, dataset, team)
    total: StorageLine = field(default_factory=StorageLine)


def storage_line(item: StoredBytes, prices: StoragePrices, seconds: float) -> StorageLine:
    if item.stored_bytes < 0 or item.logical_bytes < 0:
        raise InvalidSpec(f"negative byte count for {item.tier}:{item.dataset}", hint="measure again",
                          field="bytes")
    gb_months = item.stored_bytes / GIB * max(0.0, seconds) / SECONDS_PER_MONTH
    return StorageLine(item.logical_bytes, item.stored_bytes, gb_months, gb_months * prices.price(item.tier))


def storage_cost(items: Iterable[StoredBytes], prices: StoragePrices, seconds: float) -> StorageReport:
    """Cost of holding ``items`` for ``seconds``, per tier, team and (tier, dataset, team)."""
    report = StorageReport(seconds)
    for item in items:
        line = storage_line(item, prices, seconds)
        report.by_tier.setdefault(item.tier, StorageLine()).add(line)
        report.by_team.setdefault(item.team, StorageLine()).add(line)
        report.by_dataset.setdefault((item.tier, item.dataset, item.team), StorageLine()).add(line)
        report.total.add(line)
    return report
