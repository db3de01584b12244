"""Five parties as real processes under SecAgg+; one is killed mid-round and the round still completes.

The kill comes after the party has sent its key shares and before its masked vector: the server
must reconstruct that party's pairwise masks from the survivors' shares, or the sum is garbage.
The result is compared with FedAvg of the four survivors computed in the clear. A recording proxy
between the parties and the server shows that no party's plaintext weights crossed the wire.
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


def _stage_replies(log: Path) -> int:
    try:
        return log.read_text(errors="replace").count("Sent successfully")
    except OSError:
        return 0


# Real processes over TCP: a SecAgg+ round is four Flower message round trips, each spawning a
# ClientApp process per party; on a loaded 2-core machine that is minutes, not seconds.
@pytest.mark.timeout(900)
def test_secagg_round_survives_a_party_killed_mid_round(tmp_path: Path) -> None:
    shard_paths, test = shards(tmp_path)
    fed, tap = tapped(tmp_path, shard_paths, test,
                      ["--rounds", "1", "--round-timeout", "90", "--min-fit-parties", "3"])
    try:
        # Two train replies = SecAgg+ setup and key sharing done; the masked vector is next.
        assert local.wait(fed, 600, until=lambda f: _stage_replies(tmp_path / "party-4.log") >= 2), \
            "party-4 never reached the key-sharing stage; see the logs in " + str(tmp_path)
        fed.kill_party("party-4")
        assert local.wait(fed, 600), "the server did not finish after the dropout"
        assert fed.server.returncode == 0, (tmp_path / "server.log").read_text(errors="replace")[-3000:]
        wire = tap.sent_to_server()
    finally:
        fed.stop()
        tap.close()

    rounds = json.loads((tmp_path / "out" / "metrics.json").read_text())
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
        assert not appears(first_round_update(shard, i), wire), f"party-{i}'s plaintext update crossed the wire"
