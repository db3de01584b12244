"""Authorization decision latency with the default Cedar policy set.

Ours: ``Authorizer.authorize`` (pre-parsed PolicySet, two entities built per request, reasons
mapped to @id). Baseline: the bare ``cedarpy.is_authorized`` call on the same request with the
same pre-parsed PolicySet (the ANCHORS figure of ~86 us). Prints one JSON object on stdout.

    PYTHONPATH=src .venv/bin/python benchmarks/authz.py --n 20000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import cedarpy

from modelplane.security.authz import Authorizer
from modelplane.security.principal import Principal

NOW = 1_780_000_000.0


def pct(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "p50_us": round(statistics.median(xs) * 1e6, 1),
        "p99_us": round(xs[int(len(xs) * 0.99)] * 1e6, 1),
        "mean_us": round(statistics.fmean(xs) * 1e6, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    authz = Authorizer()
    roles = [
        Principal("ann", "user", "a", "member", mfa_at=NOW - 60),
        Principal("bob", "user", "b", "member"),
        Principal("root", "user", "ops", "admin"),
        Principal("aud", "user", "c", "auditor"),
        Principal("ci", "service", "a", "service", scopes=("jobs:read",)),
    ]
    resources = [
        {"type": "Job", "id": "j1", "owner_team": "a"},
        {"type": "Dataset", "id": "d1", "owner_team": "a", "sensitivity": "restricted"},
        {"type": "Node", "id": "n1"},
        {"type": "AuditLog", "id": "log"},
    ]
    cases = [
        ({"id": p.id, **p.attributes(NOW)}, a, r, {"risk_score": (i * 17) % 100})
        for i, (p, a, r) in enumerate((p, a, r) for p in roles for a in ("read", "write") for r in resources)
    ]
    print(f"{len(cases)} distinct requests, {args.n} decisions each side", file=sys.stderr)
    # Baseline: the same request dicts, entities prebuilt, straight into cedarpy.
    raw = []
    for pa, action, res, ctx in cases:
        ent = [
            {
                "uid": {"type": "User", "id": pa["id"]},
                "attrs": {k: v for k, v in pa.items() if k != "id"},
                "parents": [],
            },
            {
                "uid": {"type": res["type"], "id": res["id"]},
                "attrs": {k: v for k, v in res.items() if k not in ("id", "type")},
                "parents": [],
            },
        ]
        full_ctx = {**authz.defaults, "required_scope": f"{res['type'].lower()}s:{action}", **ctx}
        req = {
            "principal": {"type": "User", "id": pa["id"]},
            "action": {"type": "Action", "id": action},
            "resource": {"type": res["type"], "id": res["id"]},
            "context": full_ctx,
        }
        raw.append((req, ent))
    for _ in range(500):  # warm up
        authz.authorize(*cases[0])
        cedarpy.is_authorized(raw[0][0], authz.policy_set, raw[0][1])
    ours, base = [], []
    allowed = 0
    for i in range(args.n):
        pa, action, res, ctx = cases[i % len(cases)]
        t = time.perf_counter()
        d = authz.authorize(pa, action, res, ctx)
        ours.append(time.perf_counter() - t)
        allowed += d.allowed
        req, ent = raw[i % len(raw)]
        t = time.perf_counter()
        cedarpy.is_authorized(req, authz.policy_set, ent)
        base.append(time.perf_counter() - t)
    o, b = pct(ours), pct(base)
    print(
        json.dumps(
            {
                "benchmark": "authz",
                "policy_set": "default (7 policies)",
                "decisions": args.n,
                "allowed_share": round(allowed / args.n, 3),
                "ours_authorize": o,
                "baseline_bare_cedarpy_is_authorized": b,
                "ratio_ours_over_baseline_p50": round(o["p50_us"] / b["p50_us"], 3),
                "goal_p99_us": 500,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
