"""The secure-key-release decision (privacy.tee): only confidential jobs, only on freshly attested
nodes, only for declared datasets; each refusal names its cause. Real quotes from tee-dcap."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modelplane.privacy.tee import (
    AttestationResult,
    TeeRequirement,
    attest,
    key_release_allowed,
    placement_allowed,
    requirement_for_tee,
    submission_refusal,
)
from tests.privacy.test_tee import _load

DS = "file:///data/patients"


def _nodes() -> tuple[dict[str, AttestationResult | None], int]:
    tdx_quote, tdx_col, tdx_at = _load("sample/tdx_quote")
    sgx_quote, sgx_col, sgx_at = _load("sample/sgx_quote")
    return {"tdx-0": attest(tdx_quote, tdx_col, tdx_at), "sgx-0": attest(sgx_quote, sgx_col, sgx_at),
            "broken-0": attest(tdx_quote[:200] + bytes([tdx_quote[200] ^ 1]) + tdx_quote[201:], tdx_col, tdx_at), "plain-0": None}, max(tdx_at, sgx_at) + 60


def test_spec_tee_maps_to_a_requirement() -> None:
    assert not requirement_for_tee(None).confidential and not requirement_for_tee("").confidential
    assert requirement_for_tee("any").tee_types == frozenset({"sgx", "tdx"})
    assert requirement_for_tee("tdx") == TeeRequirement(confidential=True, tee_types=frozenset({"tdx"}))


def test_release_to_a_confidential_job_on_attested_nodes_only() -> None:
    nodes, now = _nodes()
    conf = requirement_for_tee("any")
    ok = key_release_allowed(DS, "train", conf, {"tdx-0": nodes["tdx-0"], "sgx-0": nodes["sgx-0"]}, now, declared=True)
    assert ok and "2 node(s)" in ok.reason
    plain = key_release_allowed(DS, "train", requirement_for_tee(None), {"tdx-0": nodes["tdx-0"]}, now, declared=True)
    assert not plain
    assert plain.reason == f"dataset {DS} is sensitive; job train is not confidential: set spec.tee"
    stale = key_release_allowed(DS, "train", conf, {"tdx-0": nodes["tdx-0"]}, now + 2 * 86400, declared=True)
    assert not stale and stale.reason.startswith("node tdx-0 attestation is stale")
    broken = key_release_allowed(DS, "train", conf, {"tdx-0": nodes["tdx-0"], "broken-0": nodes["broken-0"]}, now,
                                 declared=True)
    assert not broken and broken.reason.startswith("node broken-0 attestation failed")
    none = key_release_allowed(DS, "train", conf, {"plain-0": None}, now, declared=True)
    assert none.reason == "node plain-0 has no TEE attestation"
    wrong_kind = key_release_allowed(DS, "train", requirement_for_tee("tdx"), {"sgx-0": nodes["sgx-0"]}, now,
                                     declared=True)
    assert not wrong_kind and "node sgx-0 TEE 'sgx'" in wrong_kind.reason
    assert "not running" in key_release_allowed(DS, "train", conf, None, now, declared=True).reason
    undeclared = key_release_allowed(DS, "train", conf, {"tdx-0": nodes["tdx-0"]}, now, declared=False)
    assert not undeclared and "spec.datasets" in undeclared.reason


def test_submission_refusal_names_the_datasets_and_the_fix() -> None:
    assert submission_refusal("j", [], requirement_for_tee(None)) is None
    assert submission_refusal("j", [DS], requirement_for_tee("any")) is None
    assert submission_refusal("j", [DS], requirement_for_tee(None)) == (
        f"dataset {DS} is sensitive; job j is not confidential: set spec.tee")
    assert "datasets file:///a, file:///b are sensitive" in str(
        submission_refusal("j", ["file:///b", "file:///a"], requirement_for_tee(None)))


_results = st.one_of(st.none(), st.builds(
    AttestationResult, ok=st.booleans(), verified_at=st.integers(0, 10**6), tee=st.sampled_from(["sgx", "tdx"]),
    status=st.sampled_from(["UpToDate", "OutOfDate", "SWHardeningNeeded"])))


@given(st.sampled_from([None, "any", "sgx", "tdx"]), st.dictionaries(st.sampled_from(["a", "b", "c"]), _results),
       st.integers(0, 2 * 10**6), st.booleans())
def test_a_key_is_released_exactly_when_every_condition_holds(tee: str | None,
                                                                placement: dict[str, AttestationResult | None],
                                                                now: int, declared: bool) -> None:
    req = requirement_for_tee(tee)
    decision = key_release_allowed(DS, "j", req, placement, now, declared=declared)
    expected = (req.confidential and bool(placement) and declared
                and all(placement_allowed(r, req, now) for r in placement.values()))
    assert decision.allowed == expected
    assert decision.reason
