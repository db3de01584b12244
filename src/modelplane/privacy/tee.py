"""TEE attestation: verify SGX/TDX DCAP quotes offline with dcap-qvl, and gate placement on the result.

Verification (``dcap-qvl``, Phala's Rust verifier, via its Python binding) checks the PCK
certificate chain to Intel's SGX root CA and the CRLs, the TCB info and QE identity signatures,
the QE report signature and its binding to the attestation key, the quote signature, and looks the
platform's TCB level up in the TCB info, giving Intel's status and advisory IDs. The time is an
argument: nothing here reads the clock, so a verdict can be reproduced.

``placement_allowed`` is pure: a confidential job goes only to a node whose attestation
succeeded, is fresh, has an accepted status and none of the job's forbidden advisories.
``key_release_allowed`` applies the same test to every node of a running job before the data key of
a sensitive dataset is released to it (``modelplane.data.sensitive``); ``submission_refusal`` is
its check at apply time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from modelplane.privacy.errors import AttestationError, require

DEFAULT_ACCEPTED_STATUSES = frozenset({"UpToDate", "SWHardeningNeeded", "ConfigurationNeeded",
                                       "ConfigurationAndSWHardeningNeeded"})
"""Intel TCB statuses that mean the platform is patched; OutOfDate/Revoked are refused by default."""


@dataclass(frozen=True)
class AttestationResult:
    """What a node carries after its quote was checked (``ok`` False keeps the failure reason)."""

    ok: bool
    verified_at: int
    """Unix seconds of the verification time used."""
    tee: str = ""
    """``sgx`` or ``tdx``."""
    status: str = ""
    advisory_ids: tuple[str, ...] = ()
    measurement: str = ""
    """MRENCLAVE (SGX) or MRTD (TDX), hex."""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "verified_at": self.verified_at, "tee": self.tee, "status": self.status,
                "advisory_ids": list(self.advisory_ids), "measurement": self.measurement, "error": self.error}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AttestationResult:
        """Read back what ``to_dict`` wrote (a node's attestation as the store keeps it)."""
        return cls(ok=bool(d["ok"]), verified_at=int(d["verified_at"]), tee=str(d.get("tee", "")),
                   status=str(d.get("status", "")), advisory_ids=tuple(d.get("advisory_ids", ())),
                   measurement=str(d.get("measurement", "")), error=str(d.get("error", "")))


def verify_quote(quote: bytes, collateral_json: str, now_unix: int) -> AttestationResult:
    """Verify ``quote`` against its collateral at ``now_unix``; raise AttestationError if it fails."""
    dcap: Any = require("dcap_qvl")
    try:
        collateral = dcap.QuoteCollateralV3.from_json(collateral_json)
    except ValueError as exc:
        raise AttestationError(f"collateral is not valid DCAP collateral JSON: {exc}",
                               hint="fetch it with dcap_qvl.get_collateral or from a PCCS", field="collateral") from exc
    try:
        report = dcap.verify(quote, collateral, now_unix)
    except ValueError as exc:
        raise AttestationError(f"quote verification failed: {exc}",
                               hint="check the quote and collateral belong together and the time is inside "
                                    "the collateral's validity window", field="quote") from exc
    body = json.loads(report.to_json())["report"]
    if "SgxEnclave" in body:
        tee, measurement = "sgx", body["SgxEnclave"].get("mr_enclave", "")
    else:
        tee, inner = "tdx", next(iter(body.values()))
        measurement = inner.get("mr_td", "")
    return AttestationResult(ok=True, verified_at=now_unix, tee=tee, status=str(report.status),
                             advisory_ids=tuple(report.advisory_ids), measurement=measurement)


def attest(quote: bytes, collateral_json: str, now_unix: int) -> AttestationResult:
    """Like ``verify_quote`` but a failure becomes a result with ``ok=False`` (what a node records)."""
    try:
        return verify_quote(quote, collateral_json, now_unix)
    except AttestationError as exc:
        return AttestationResult(ok=False, verified_at=now_unix, error=exc.message)


@dataclass(frozen=True)
class TeeRequirement:
    """A job's TEE constraint (``confidential: true`` in a manifest)."""

    confidential: bool = False
    tee_types: frozenset[str] = frozenset({"sgx", "tdx"})
    accepted_statuses: frozenset[str] = DEFAULT_ACCEPTED_STATUSES
    forbidden_advisories: frozenset[str] = frozenset()
    max_age_seconds: int = 24 * 3600
    measurements: frozenset[str] = frozenset()
    """If non-empty, the node's measurement must be one of these."""


@dataclass(frozen=True)
class PlacementDecision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def placement_allowed(
    node_tee_quote_result: AttestationResult | None, job_requirement: TeeRequirement, now_unix: int
) -> PlacementDecision:
    """May a job with this requirement run on a node with this attestation at ``now_unix``?"""
    if not job_requirement.confidential:
        return PlacementDecision(True, "job is not confidential")
    r = node_tee_quote_result
    if r is None:
        return PlacementDecision(False, "node has no TEE attestation")
    if not r.ok:
        return PlacementDecision(False, f"node attestation failed: {r.error}")
    age = now_unix - r.verified_at
    if age < 0 or age > job_requirement.max_age_seconds:
        return PlacementDecision(False, f"node attestation is stale ({age}s old; the job accepts at most "
                                        f"{job_requirement.max_age_seconds}s)")
    if r.tee not in job_requirement.tee_types:
        return PlacementDecision(False, f"node TEE {r.tee!r} not in {sorted(job_requirement.tee_types)}")
    if r.status not in job_requirement.accepted_statuses:
        return PlacementDecision(False, f"node TCB status {r.status!r} is not accepted")
    bad = sorted(set(r.advisory_ids) & job_requirement.forbidden_advisories)
    if bad:
        return PlacementDecision(False, f"node is affected by forbidden advisories {bad}")
    if job_requirement.measurements and r.measurement not in job_requirement.measurements:
        return PlacementDecision(False, "node measurement is not in the job's allow-list")
    return PlacementDecision(True, f"attested {r.tee} node, status {r.status}")


def dataset_readable(dataset_sensitive: bool, job_requirement: TeeRequirement) -> bool:
    """Sensitive datasets are readable only by confidential jobs (which run only on attested nodes)."""
    return not dataset_sensitive or job_requirement.confidential


def requirement_for_tee(tee: str | None) -> TeeRequirement:
    """The requirement of a job's ``spec.tee``: unset is not confidential, ``any`` accepts SGX and TDX
    nodes, a kind (``sgx``, ``tdx``) only that kind."""
    if not tee:
        return TeeRequirement(confidential=False)
    if tee == "any":
        return TeeRequirement(confidential=True)
    return TeeRequirement(confidential=True, tee_types=frozenset({tee}))


def submission_refusal(job: str, sensitive_declared: Iterable[str], job_requirement: TeeRequirement) -> str | None:
    """Why a job that declares these sensitive datasets may not be submitted, or None.

    The check at apply time: a job that says it reads sensitive data but is not confidential would
    only be refused later, at key release, after waiting for and holding its placement."""
    names = sorted(set(sensitive_declared))
    if not names or job_requirement.confidential:
        return None
    which = names[0] if len(names) == 1 else ", ".join(names)
    return (f"dataset{'s' if len(names) > 1 else ''} {which} {'are' if len(names) > 1 else 'is'} sensitive; "
            f"job {job} is not confidential: set spec.tee")


def key_release_allowed(dataset: str, job: str, job_requirement: TeeRequirement,
                        placement: Mapping[str, AttestationResult | None] | None, now_unix: int,
                        *, declared: bool) -> PlacementDecision:
    """May the data key of sensitive ``dataset`` be released to ``job`` at ``now_unix``?

    Secure key release as Confidential Containers' KBS or Azure SKR do it: the key goes only to a
    confidential job, running where every node of its placement holds a fresh, successful, accepted
    attestation (``placement_allowed`` for each node, so a node that went stale since scheduling is
    caught here), and only for a dataset the job declared in ``spec.datasets`` (least privilege: what
    a job may read is reviewable at submission). ``placement`` maps each node of the job's placement
    to its recorded attestation (None: none recorded); None or empty means not placed yet."""
    if not job_requirement.confidential:
        return PlacementDecision(False, f"dataset {dataset} is sensitive; job {job} is not confidential: "
                                        "set spec.tee")
    if not placement:
        return PlacementDecision(False, f"job {job} is not running on any node; keys are released only to "
                                        "a running job")
    for node in sorted(placement):
        decision = placement_allowed(placement[node], job_requirement, now_unix)
        if not decision:
            # the reasons of placement_allowed all start with "node ": name the node in them
            return PlacementDecision(False, f"node {node}{decision.reason[len('node'):]}")
    if not declared:
        return PlacementDecision(False, f"job {job} did not declare dataset {dataset}: add it to spec.datasets")
    return PlacementDecision(True, f"job {job} is confidential and its {len(placement)} node(s) are attested")


def eligible_nodes(results: dict[str, AttestationResult | None], job_requirement: TeeRequirement,
                   now_unix: int) -> list[str]:
    """Names of nodes a job may be placed on, for a scheduler filter."""
    return sorted(name for name, r in results.items() if placement_allowed(r, job_requirement, now_unix))


def requirement_from_manifest(spec: dict[str, Any] | None, advisories: Iterable[str] = ()) -> TeeRequirement:
    """Build a requirement from a manifest fragment like ``{"confidential": true, "teeTypes": ["tdx"]}``."""
    spec = spec or {}
    kwargs: dict[str, Any] = {"confidential": bool(spec.get("confidential", False))}
    if "teeTypes" in spec:
        kwargs["tee_types"] = frozenset(spec["teeTypes"])
    if "maxAttestationAgeSeconds" in spec:
        kwargs["max_age_seconds"] = int(spec["maxAttestationAgeSeconds"])
    kwargs["forbidden_advisories"] = frozenset(spec.get("forbiddenAdvisories", [])) | frozenset(advisories)
    return TeeRequirement(**kwargs)


__all__ = ["AttestationResult", "PlacementDecision", "TeeRequirement", "attest", "dataset_readable",
           "eligible_nodes", "key_release_allowed", "placement_allowed", "requirement_for_tee",
           "requirement_from_manifest", "submission_refusal", "verify_quote"]
