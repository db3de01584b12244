"""Malformed and out-of-range updates are rejected and the party named; the round goes on.

Plain FedAvg: the server sees each update and checks it (a NaN party and a party whose update is
a million times too large). Under SecAgg+ it sees only masked vectors: a party whose masked
vector is malformed is rejected by name and treated as a dropout (its masks reconstructed).
The plain run also serves as the control for the wire inspection: there, plaintext weights *are*
visible to a proxy that holds a certificate of the job (what the server sees), so the SecAgg+
test's "not visible" means something, and they are not visible on the wire itself (TLS).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelplane.privacy.horizontal import local
from tests.privacy.horizontal_fixtures import (
    appears,
    fedavg_of,
    first_round_update,
    saved_model,
    shards,
    tapped,
)


def _run(
    tmp: Path, server_args: list[str], faults: dict[str, str]
) -> tuple[list[dict[str, object]], tuple[bytes, bytes], dict[str, Path]]:
    shard_paths, test = shards(tmp)
    fed, tap = tapped(
        tmp,
        shard_paths,
        test,
        ["--rounds", "1", "--round-timeout", "90", "--min-fit-parties", "3", *server_args],
        party_args={p: ["--inject-fault", f] for p, f in faults.items()},
    )
    try:
        assert local.wait(fed, 700), f"the federation did not finish; logs in {tmp}"
        assert fed.server.returncode == 0, (tmp / "server.log").read_text(errors="replace")[-3000:]
        wire = tap.sent_to_server(), tap.on_the_wire()
    finally:
        fed.stop()
        tap.close()
    return json.loads((tmp / "out" / "metrics.json").read_text()), wire, shard_paths


# Real processes over TCP: a SecAgg+ round is four Flower message round trips between the server
# and every party; on a loaded 2-core machine that can take minutes.
@pytest.mark.timeout(900)
def test_plain_fedavg_rejects_and_names_bad_parties(tmp_path: Path) -> None:
    rounds, (seen, wire), shard_paths = _run(
        tmp_path, ["--no-secagg"], {"party-1": "nan", "party-2": "scale"}
    )
    rejected = {r["party"]: r["reason"] for r in rounds[0]["rejected"]}  # type: ignore[attr-defined]
    assert set(rejected) == {"party-1", "party-2"}
    assert "NaN" in rejected["party-1"]
    assert "exceeds the bound" in rejected["party-2"]
    assert rounds[0]["parties"] == 3
    expected = fedavg_of(shard_paths, ["party-0", "party-3", "party-4"])
    for e, g in zip(expected, saved_model(tmp_path), strict=True):
        np.testing.assert_allclose(g, e, atol=1e-9)
    # Control for the wire inspection: without SecAgg+ the server sees the plaintext update ...
    update = first_round_update(shard_paths["party-0"], 0)
    assert appears(update, seen)
    # ... and TLS keeps it off the wire: an eavesdropper sees only ciphertext.
    assert len(wire) > 10_000 and not appears(update, wire)


# Real processes over TCP: a SecAgg+ round is four Flower message round trips between the server
# and every party; on a loaded 2-core machine that can take minutes.
@pytest.mark.timeout(900)
def test_secagg_rejects_and_names_a_malformed_masked_vector(tmp_path: Path) -> None:
    rounds, _, shard_paths = _run(tmp_path, [], {"party-3": "masked-shape"})
    assert [r["party"] for r in rounds[0]["rejected"]] == ["party-3"]  # type: ignore[attr-defined]
    assert "masked vector has" in rounds[0]["rejected"][0]["reason"]  # type: ignore[index]
    assert rounds[0]["parties"] == 4
    expected = fedavg_of(shard_paths, ["party-0", "party-1", "party-2", "party-4"])
    for e, g in zip(expected, saved_model(tmp_path), strict=True):
        np.testing.assert_allclose(g, e, atol=1e-3)
