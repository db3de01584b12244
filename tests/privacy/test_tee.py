"""Real SGX and TDX quotes with their collateral (../shared/data/vectors/tee-dcap, verdicts in EXPECTED.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelplane.privacy.errors import AttestationError
from modelplane.privacy.tee import (
    AttestationResult,
    TeeRequirement,
    attest,
    dataset_readable,
    eligible_nodes,
    placement_allowed,
    requirement_from_manifest,
    verify_quote,
)

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "vectors" / "tee-dcap"
EXPECTED = json.loads((VECTORS / "EXPECTED.json").read_text())


def _load(name: str) -> tuple[bytes, str, int]:
    case = EXPECTED[name]
    return (VECTORS / name).read_bytes(), (VECTORS / case["collateral"]).read_text(), case["verify_at_unix"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_quotes_verify_with_the_expected_verdict(name: str) -> None:
    quote, collateral, at = _load(name)
    result = verify_quote(quote, collateral, at)
    assert result.ok
    assert result.status == EXPECTED[name]["expected_status"]
    assert list(result.advisory_ids) == EXPECTED[name]["advisory_ids"]
    assert result.tee == ("tdx" if "tdx" in name else "sgx")
    assert len(result.measurement) == (96 if result.tee == "tdx" else 64)


def test_verification_outside_the_collateral_window_fails() -> None:
    quote, collateral, at = _load("sample/sgx_quote")
    with pytest.raises(AttestationError, match=r"Expired|future"):
        verify_quote(quote, collateral, at + 10 * 365 * 86400)
    with pytest.raises(AttestationError, match="future"):
        verify_quote(quote, collateral, at - 2 * 365 * 86400)


def test_a_tampered_quote_fails() -> None:
    quote, collateral, at = _load("sample/sgx_quote")
    tampered = bytearray(quote)
    tampered[100] ^= 1  # inside the enclave report body
    result = attest(bytes(tampered), collateral, at)
    assert not result.ok and "signature" in result.error


def test_a_quote_with_another_platforms_collateral_fails() -> None:
    quote, _, at = _load("sample/sgx_quote")
    _, tdx_collateral, _ = _load("sample/tdx_quote")
    assert not attest(quote, tdx_collateral, at).ok


def test_garbage_collateral_is_a_clear_error() -> None:
    quote, _, at = _load("sample/tdx_quote")
    with pytest.raises(AttestationError) as err:
        verify_quote(quote, "{}", at)
    assert err.value.field == "collateral"


def test_confidential_jobs_go_only_to_fresh_attested_nodes() -> None:
    tdx_quote, tdx_col, tdx_at = _load("sample/tdx_quote")
    sgx_quote, sgx_col, sgx_at = _load("sample/sgx_quote")
    nodes = {
        "tdx-node": attest(tdx_quote, tdx_col, tdx_at),
        "sgx-node": attest(sgx_quote, sgx_col, sgx_at),
        "broken-node": attest(tdx_quote[:200] + bytes([tdx_quote[200] ^ 1]) + tdx_quote[201:], tdx_col, tdx_at),
        "plain-node": None,
    }
    now = max(tdx_at, sgx_at) + 60
    assert eligible_nodes(nodes, TeeRequirement(confidential=False), now) == sorted(nodes)
    assert eligible_nodes(nodes, TeeRequirement(confidential=True), now) == ["sgx-node", "tdx-node"]
    strict = requirement_from_manifest({"confidential": True}, advisories=["INTEL-SA-00615"])
    assert eligible_nodes(nodes, strict, now) == ["tdx-node"]
    assert "INTEL-SA-00615" in placement_allowed(nodes["sgx-node"], strict, now).reason
    only_uptodate = TeeRequirement(confidential=True, accepted_statuses=frozenset({"UpToDate"}))
    assert eligible_nodes(nodes, only_uptodate, now) == ["tdx-node"]
    stale = placement_allowed(nodes["tdx-node"], TeeRequirement(confidential=True, max_age_seconds=3600), now + 7200)
    assert not stale and "old" in stale.reason
    assert eligible_nodes(nodes, requirement_from_manifest({"confidential": True, "teeTypes": ["sgx"]}), now) == ["sgx-node"]


def test_sensitive_datasets_are_readable_only_by_confidential_jobs() -> None:
    assert dataset_readable(False, TeeRequirement())
    assert not dataset_readable(True, TeeRequirement())
    assert dataset_readable(True, TeeRequirement(confidential=True))


@given(st.booleans(), st.sampled_from(["UpToDate", "OutOfDate", "Revoked", "SWHardeningNeeded"]),
       st.integers(-10, 10**6), st.sampled_from(["sgx", "tdx"]))
def test_placement_never_allows_a_failed_stale_or_unaccepted_attestation(ok: bool, status: str, age: int, tee: str) -> None:
    requirement = TeeRequirement(confidential=True, max_age_seconds=86400)
    result = AttestationResult(ok=ok, verified_at=1000, tee=tee, status=status, error="" if ok else "bad")
    decision = placement_allowed(result, requirement, 1000 + age)
    expected = ok and 0 <= age <= 86400 and status in requirement.accepted_statuses
    assert decision.allowed == expected
