"""Storage cost: bytes on the medium x months x the tier's price per GB-month, per tier, team and dataset."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelplane.core.errors import InvalidSpec
from modelplane.core.storage_cost import (
    DEFAULT_PRICES,
    GIB,
    SECONDS_PER_MONTH,
    TIERS,
    StoragePrices,
    StoredBytes,
    ec_stored_bytes,
    storage_cost,
)

PRICES = StoragePrices()


def item(tier="s3-standard", dataset="d", team="t", stored=GIB, logical=None):
    return StoredBytes(tier, dataset, team, stored if logical is None else logical, stored)


def test_one_gib_month_costs_the_list_price_of_its_tier():
    for tier in TIERS:
        r = storage_cost([item(tier)], PRICES, SECONDS_PER_MONTH)
        assert r.by_tier[tier].gb_months == pytest.approx(1.0)
        assert r.total.cost == pytest.approx(DEFAULT_PRICES[tier])
    assert DEFAULT_PRICES == {"hot": 0.08, "ec": 0.045, "s3-standard": 0.023, "s3-ia": 0.0125}


def test_erasure_coding_pays_for_parity():
    assert ec_stored_bytes(4 * GIB, 4, 2) == 6 * GIB  # k+m over k
    assert ec_stored_bytes(10, 4, 2) == 15  # rounded up: a byte on disk is a whole byte
    logical = 8 * GIB
    r = storage_cost([item("ec", stored=ec_stored_bytes(logical, 8, 3), logical=logical)], PRICES,
                     SECONDS_PER_MONTH)
    assert r.total.logical_bytes == logical and r.total.stored_bytes == 11 * GIB
    assert r.total.cost == pytest.approx(11 * 0.045)
    with pytest.raises(InvalidSpec, match="k >= 1"):
        ec_stored_bytes(1, 0, 2)


def test_rollups_by_tier_team_and_dataset():
    items = [item("hot", "teams/a/x", "a", 2 * GIB), item("s3-ia", "teams/a/y", "a", 4 * GIB),
             item("s3-ia", "raw/z", "(unattributed)", 4 * GIB), item("hot", "teams/a/x", "a", GIB)]
    r = storage_cost(items, PRICES, SECONDS_PER_MONTH / 2)
    assert r.by_tier["hot"].stored_bytes == 3 * GIB and r.by_tier["hot"].cost == pytest.approx(3 * 0.08 / 2)
    assert r.by_team["a"].cost == pytest.approx((3 * 0.08 + 4 * 0.0125) / 2)
    assert r.by_dataset[("hot", "teams/a/x", "a")].stored_bytes == 3 * GIB
    assert r.total.cost == pytest.approx(sum(v.cost for v in r.by_tier.values()))


def test_overrides_reprice_a_tier_and_refuse_typos():
    p = StoragePrices.with_overrides({"s3-standard": 0.021})
    assert p.price("s3-standard") == 0.021 and p.price("hot") == 0.08
    with pytest.raises(InvalidSpec, match="unknown storage tier 's3'"):
        StoragePrices.with_overrides({"s3": 0.02})
    with pytest.raises(InvalidSpec, match=">= 0"):
        StoragePrices.with_overrides({"hot": -1})
    with pytest.raises(InvalidSpec, match="no price"):
        storage_cost([item("tape")], PRICES, 1.0)
    with pytest.raises(InvalidSpec, match="negative"):
        storage_cost([item(stored=-1)], PRICES, 1.0)


datasets = st.lists(st.tuples(st.sampled_from(TIERS), st.integers(0, 1 << 50)), min_size=1, max_size=8)


@given(datasets, st.floats(0, 400 * 86400))
def test_cost_is_additive_over_datasets(rows, seconds):
    items = [item(tier, f"d{i}", f"t{i % 3}", n) for i, (tier, n) in enumerate(rows)]
    whole = storage_cost(items, PRICES, seconds).total.cost
    parts = sum(storage_cost([it], PRICES, seconds).total.cost for it in items)
    assert whole == pytest.approx(parts, rel=1e-9, abs=1e-12)


@given(st.sampled_from(TIERS), st.integers(0, 1 << 50), st.integers(0, 1 << 40), st.floats(0, 400 * 86400))
def test_cost_is_monotone_in_bytes(tier, n, extra, seconds):
    less = storage_cost([item(tier, stored=n)], PRICES, seconds).total.cost
    more = storage_cost([item(tier, stored=n + extra)], PRICES, seconds).total.cost
    assert more >= less >= 0
