"""The next round's SecAgg+ setup answered ahead: used only for the parties and the setup it was sent for.

Process-level behaviour (accuracy per round equal with and without SecAgg+, a party killed
mid-round) is covered by the benchmark and the dropout test; here the server-side bookkeeping
runs against a fake grid that answers as parties do.
"""

from __future__ import annotations

from typing import Any

import pytest
from flwr.app import Message
from flwr.common import ConfigRecord, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.supercore.task_identity import TaskIdentity

from modelplane.privacy.horizontal.keyahead import NEXT_SETUP, KeyAhead


@pytest.fixture(autouse=True)
def _identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages take their run and node from the task running them; this test is that task."""
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


class Parties:
    """A grid whose parties answer setup with fresh keys and, when asked, the next setup too."""

    def __init__(self, silent_ahead: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.sent: list[tuple[int, dict[str, Any], bool]] = []  # (node, stage config, carried a next setup)
        self.keys = 0
        self.silent_ahead = silent_ahead

    def _keys(self) -> ConfigRecord:
        self.keys += 1
        return ConfigRecord(
            {Key.PUBLIC_KEY_1: b"pk1-%d" % self.keys, Key.PUBLIC_KEY_2: b"pk2-%d" % self.keys}
        )

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        replies = []
        for msg in messages:
            records = msg.content.config_records
            cfg = dict(records[RECORD_KEY_CONFIGS])
            nid = msg.metadata.dst_node_id
            self.sent.append((nid, cfg, NEXT_SETUP in records))
            out = RecordDict(
                {RECORD_KEY_CONFIGS: self._keys() if cfg[Key.STAGE] == Stage.SETUP else ConfigRecord()}
            )
            if NEXT_SETUP in records and nid not in self.silent_ahead:
                out.config_records[NEXT_SETUP] = self._keys()
            replies.append(Message(out, reply_to=msg))
        return replies


def _setup(n: int) -> dict[str, Any]:
    return {Key.STAGE: Stage.SETUP, Key.SAMPLE_NUMBER: n, Key.SHARE_NUMBER: n, Key.THRESHOLD: 2}


def _messages(nodes: list[int], cfg: dict[str, Any]) -> list[Message]:
    content = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(dict(cfg))})
    return [Message(content=content, dst_node_id=n, message_type="train") for n in nodes]


def _unmask(nodes: list[int]) -> list[Message]:
    return [
        Message(
            content=RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({Key.STAGE: Stage.UNMASK})}),
            dst_node_id=n,
            message_type="train",
        )
        for n in nodes
    ]


def test_setup_answered_ahead_replaces_the_round_trip_only_where_it_matches() -> None:
    parties, ahead, skipped = Parties(silent_ahead={3}), KeyAhead(), []
    nodes = [1, 2, 3]
    first = ahead.setup_grid(parties, lambda: skipped.append(1)).send_and_receive(_messages(nodes, _setup(3)))
    assert len(first) == 3 and [n for n, _, _ in parties.sent] == nodes  # round 1: a real setup

    parties.sent.clear()
    replies = ahead.unmask_grid(parties).send_and_receive(_unmask(nodes))
    assert [carried for _, _, carried in parties.sent] == [True, True, True]
    assert all(
        NEXT_SETUP not in r.content.config_records for r in replies
    )  # Flower's unmask sees its own reply
    assert set(ahead.answers) == {1, 2}  # party 3 did not answer ahead

    parties.sent.clear()
    second = ahead.setup_grid(parties, lambda: skipped.append(1)).send_and_receive(
        _messages(nodes, _setup(3))
    )
    assert [n for n, _, _ in parties.sent] == [3]  # only the party without an answer is asked
    keys = {
        r.metadata.src_node_id: r.content.config_records[RECORD_KEY_CONFIGS][Key.PUBLIC_KEY_1] for r in second
    }
    assert set(keys) == {1, 2, 3} and len(set(keys.values())) == 3 and not skipped
    assert ahead.answers == {}  # answers are used once


def test_a_changed_setup_is_sent_again_and_a_full_match_costs_no_round_trip() -> None:
    parties, ahead, skipped = Parties(), KeyAhead(), []
    ahead.setup_grid(parties).send_and_receive(_messages([1, 2, 3], _setup(3)))
    ahead.unmask_grid(parties).send_and_receive(_unmask([1, 2, 3]))
    parties.sent.clear()
    ahead.setup_grid(parties).send_and_receive(_messages([1, 2], _setup(2)))  # a party left: new sample
    assert [n for n, _, _ in parties.sent] == [1, 2]

    ahead.unmask_grid(parties).send_and_receive(_unmask([1, 2]))
    parties.sent.clear()
    replies = ahead.setup_grid(parties, lambda: skipped.append(1)).send_and_receive(
        _messages([1, 2], _setup(2))
    )
    assert parties.sent == [] and skipped == [1] and {r.metadata.src_node_id for r in replies} == {1, 2}
