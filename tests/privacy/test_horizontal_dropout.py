"""Five parties as real processes under SecAgg+; one is killed mid-round and the round still completes.

The kill comes after the party has sent its key shares and before its masked vector (the party is
told to stall at exactly that stage, so the kill lands there however fast the stages run): the
server must reconstruct that party's pairwise masks from the survivors' shares, or the sum is garbage.
The result is compared with FedAvg of the four survivors computed in the clear. A recording proxy
between the parties and the server, holding a certificate of the job so that it reads what the
server reads, shows that no party's plaintext weights reached the server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelplane.privacy.horizontal import local
from modelplane.privacy.horizontal.clientapp import STALLED
from tests.privacy.horizontal_fixtures import (
    appears,
    fedavg_of,
    first_round_update,
    saved_model,
    shards,
    tapped,
)


def _stalled(log: Path) -> bool:
    try:
        return STALLED in log.read_text(errors="replace")
    except OSError:
        return False


def _kill_stalled_party_4(
    tmp_path: Path, rounds: int, fault: str
) -> tuple[dict[str, Path], bytes, list[dict[str, Any]]]:
    """Run a tapped federation in which party-4 stalls at the masked-vector stage (``fault``), kill
    it there, and return the shards, what the parties sent to the server, and the round metrics."""
    shard_paths, test = shards(tmp_path)
    fed, tap = tapped(
        tmp_path,
        shard_paths,
        test,
        # The dead party is waited for this long (or until Flower sees it offline, about
        # a minute); the live ones answer each stage within seconds even on a loaded machine.
        ["--rounds", str(rounds), "--round-timeout", "45", "--min-fit-parties", "3"],
        party_args={"party-4": ["--inject-fault", fault]},
    )
    try:
        assert local.wait(fed, 600, until=lambda f: _stalled(tmp_path / "party-4.log")), (
            f"party-4 never reached the masked-vector stage ({fault}); see the logs in {tmp_path}"
        )
        fed.kill_party("party-4")
        assert local.wait(fed, 600), "the server did not finish after the dropout"
        assert fed.server.returncode == 0, (tmp_path / "server.log").read_text(errors="replace")[-3000:]
        wire = tap.sent_to_server()
    finally:
        fed.stop()
        tap.close()
    return shard_paths, wire, json.loads((tmp_path / "out" / "metrics.json").read_text())


# Real processes over TCP: a SecAgg+ round is four Flower message round trips between the server
# and every party; on a loaded 2-core machine that can take minutes.
@pytest.mark.timeout(900)
def test_secagg_round_survives_a_party_killed_mid_round(tmp_path: Path) -> None:
    # Setup and key sharing done, party-4 is asked for its masked vector: killed there.
    shard_paths, wire, rounds = _kill_stalled_party_4(tmp_path, 1, "stall-masking")
    assert len(rounds) == 1
    assert rounds[0]["parties"] == 4
    assert "party-4" in rounds[0]["dropped"]
    assert rounds[0]["rejected"] == []

    # The securely aggregated model is the survivors' FedAvg, up to SecAgg+'s quantization.
    expected = fedavg_of(shard_paths, ["party-0", "party-1", "party-2", "party-3"])
    got = saved_model(tmp_path)
    for e, g in zip(expected, got, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-3)

    # Masked vectors only: none of the parties' round-1 weights appears in what they sent.
    assert len(wire) > 10_000
    for i, shard in enumerate(shard_paths.values()):
        assert not appears(first_round_update(shard, i), wire), (
            f"party-{i}'s plaintext update crossed the wire"
        )


@pytest.mark.timeout(900)
def test_party_killed_in_a_round_whose_keys_were_shared_ahead(tmp_path: Path) -> None:
    """Round 2's keys are set up and shared during round 1 (``keyahead.py``); party-4 then dies at
    round 2's masked-vector stage. Its masks must be removed from its neighbours' shares as in a
    normal round, and round 3 (no keys ahead for the dead party) runs every stage again."""
    shard_paths, wire, rounds = _kill_stalled_party_4(tmp_path, 3, "stall-masking:2")
    assert [r["parties"] for r in rounds] == [5, 4, 4]
    assert "party-4" in rounds[1]["dropped"] and all(r["rejected"] == [] for r in rounds)
    # Round 2 used the keys shared ahead (no setup or key-sharing round trip of its own) ...
    assert rounds[1]["stage_seconds"][:2] == [0.0, 0.0]
    # ... and round 3 set up and shared keys again, without the dead party.
    assert rounds[2]["stage_seconds"][0] > 0 and rounds[2]["stage_seconds"][1] > 0
    # Left in the sum, a dead party's pairwise masks would make the model noise (about 0.1 on ten
    # digits): instead it keeps learning after the dropout.
    acc = [r["accuracy"] for r in rounds]
    assert acc[0] > 0.4 and acc[1] > acc[0] and acc[2] > 0.7, acc
    for i, shard in enumerate(shard_paths.values()):
        assert not appears(first_round_update(shard, i), wire), (
            f"party-{i}'s plaintext update crossed the wire"
        )
