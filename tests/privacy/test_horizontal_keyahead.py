"""The next round's SecAgg+ setup and key sharing answered ahead: two round trips per round, same sum.

The server's real workflow (Flower's SecAgg+ with ``ScreenedSecAggPlus``) drives the parties' real
ClientApp (``clientapp.app``: training on a digits shard, Flower's ``secaggplus_mod`` under
``keyahead.secagg_with_next_round``) through an in-process grid that delivers each message to
the party it is addressed to, copied as the wire would copy it, and records which SecAgg+ stages
each party was sent. What crosses processes in a real federation is covered by the process
tests (dropout, TLS, malformed) and the benchmark.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from flwr.app import Context, Error, Message
from flwr.common import ConfigRecord, RecordDict, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.supercore.task_identity import TaskIdentity

from modelplane.privacy.horizontal import model
from modelplane.privacy.horizontal.clientapp import app as client_app
from modelplane.privacy.horizontal.keyahead import (
    NEXT_SETUP,
    NEXT_SHARE_KEYS,
    NEXT_STATE,
    KeyAhead,
    attach,
    detach,
    plan_neighbours,
    secagg_with_next_round,
)
from modelplane.privacy.horizontal.serverapp import PromptGrid, Recorder, ScreenedFedAvg, ScreenedSecAggPlus
from tests.privacy.horizontal_fixtures import shards


@pytest.fixture(autouse=True)
def _identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages take their run and node from the task running them; this test is that task."""
    for name in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


class InProcessParties:
    """A Grid whose parties are the real ClientApp, each with its own persistent Context.

    ``offline`` parties are still listed (as Flower lists a node until its heartbeat expires) and
    answered for with an error, as the SuperLink does once it sees them gone; ``stages`` records, per message, (party, stage, what rode along).
    """

    def __init__(self, shard_paths: dict[str, Path]) -> None:
        self.run = SimpleNamespace(run_id=1)
        self.contexts = {
            100 + i: Context(
                run_id=1,
                node_id=100 + i,
                node_config={"party": name, "shard": str(path), "done-file": "", "fault": "", "seed": i},
                state=RecordDict(),
                run_config={},
            )
            for i, (name, path) in enumerate(shard_paths.items())
        }
        self.offline: set[int] = set()
        self.stages: list[tuple[int, str, tuple[str, ...]]] = []
        self.public_keys: list[bytes] = []  # every public key a party sent, in a setup or ahead
        self._replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def push_messages(self, messages: Any) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = mid = uuid.uuid4().hex
            ids.append(mid)
            nid = msg.metadata.dst_node_id
            cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
            if cfg is not None:
                extra = tuple(p for p in (NEXT_SETUP, NEXT_SHARE_KEYS) if any(k.startswith(p) for k in cfg))
                self.stages.append((nid, str(cfg[Key.STAGE]), extra))
            if nid in self.offline:  # as the SuperLink answers for a node it saw go offline
                self._replies[mid] = Message(Error(code=0, reason="node offline"), reply_to=msg)
                continue
            delivered = Message(
                copy.deepcopy(msg.content), dst_node_id=nid, message_type=msg.metadata.message_type
            )
            delivered.metadata.__dict__["_message_id"] = mid
            reply = client_app(message=delivered, context=self.contexts[nid])
            answer = dict(reply.content.config_records.get(RECORD_KEY_CONFIGS) or {})
            for key in (
                Key.PUBLIC_KEY_1,
                Key.PUBLIC_KEY_2,
                NEXT_SETUP + Key.PUBLIC_KEY_1,
                NEXT_SETUP + Key.PUBLIC_KEY_2,
            ):
                if key in answer:
                    self.public_keys.append(bytes(answer[key]))  # type: ignore[arg-type]
            self._replies[mid] = Message(copy.deepcopy(reply.content), reply_to=delivered)
        return ids

    def pull_messages(self, message_ids: Any) -> list[Message]:
        return [self._replies.pop(m) for m in list(message_ids) if m in self._replies]

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))

    def stages_of_round(self, first: int, count: int) -> list[str]:
        return [s for _, s, _ in self.stages[first : first + count]]


def _federate(tmp: Path, rounds: int, secagg: bool, on_round: Any = None) -> tuple[list[np.ndarray], Any]:
    """Run the ServerApp's workflow (as ``serverapp.main`` builds it) over in-process parties.

    In process every party answers at once (an offline one with an error).
    """
    shard_paths, _ = shards(tmp)
    parties = InProcessParties(shard_paths)
    recorder = Recorder(tmp / f"metrics-{secagg}.json", {n: f"party-{n - 100}" for n in parties.contexts})

    def evaluate(server_round: int, params: Any, _cfg: Any) -> tuple[float, dict[str, Any]]:
        if server_round > 0:
            recorder.close_round(server_round, 0.0, 0.0)
            if on_round is not None:
                on_round(server_round, parties)
        return 0.0, {}

    strategy = ScreenedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=3,
        min_evaluate_clients=0,
        min_available_clients=3,
        evaluate_fn=evaluate,
        on_fit_config_fn=lambda r: {"round": r, "epochs": 2, "learning_rate": 0.5, "batch_size": 32},
        accept_failures=True,
        initial_parameters=ndarrays_to_parameters(model.zeros()),
    )
    settings = SimpleNamespace(max_update_norm=50.0)
    strategy.recorder, strategy.settings, strategy.secagg = recorder, settings, secagg  # type: ignore[assignment]
    server_ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    legacy = LegacyContext(
        context=server_ctx,
        config=ServerConfig(num_rounds=rounds, round_timeout=2),
        strategy=strategy,
    )
    workflow = (
        ScreenedSecAggPlus(
            recorder, num_shares=1.0, reconstruction_threshold=0.6, clipping_range=8.0, timeout=2
        )
        if secagg
        else None
    )
    grid = PromptGrid(parties, recorder)  # type: ignore[arg-type]
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)  # type: ignore[arg-type]
    final = compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], True)
    return parameters_to_ndarrays(final), (parties, recorder)


@pytest.mark.timeout(300)
def test_rounds_after_the_first_take_two_round_trips_and_sum_the_same(tmp_path: Path) -> None:
    plain, _ = _federate(tmp_path / "plain", 3, secagg=False)
    secure, (parties, recorder) = _federate(tmp_path / "secure", 3, secagg=True)
    # SecAgg+ sums quantized updates: the model equals plain FedAvg up to the quantization step.
    for p, s in zip(plain, secure, strict=True):
        np.testing.assert_allclose(s, p, atol=1e-3)
    n = len(parties.contexts)
    sent = [s for _, s, _ in parties.stages]
    # Round 1: every stage; rounds 2 and 3: masked vectors and unmask only.
    assert (
        sent[: 4 * n]
        == [Stage.SETUP] * n
        + [Stage.SHARE_KEYS] * n
        + [Stage.COLLECT_MASKED_VECTORS] * n
        + [Stage.UNMASK] * n
    )
    assert sent[4 * n :] == ([Stage.COLLECT_MASKED_VECTORS] * n + [Stage.UNMASK] * n) * 2
    # What rode along: the next setup with the masked-vector requests, the next key sharing with
    # unmask, never in the last round (there is no next one).
    extras = [e for _, _, e in parties.stages]
    assert extras[2 * n : 3 * n] == [(NEXT_SETUP,)] * n and extras[3 * n : 4 * n] == [(NEXT_SHARE_KEYS,)] * n
    assert extras[-2 * n :] == [()] * (2 * n)
    # The four stages stay in the metrics; those answered ahead took no time of their own.
    rows = recorder.rounds
    assert [len(r["stage_seconds"]) for r in rows] == [4, 4, 4]
    assert all(r["stage_seconds"][:2] == [0.0, 0.0] for r in rows[1:]) and rows[0]["stage_seconds"][0] > 0
    assert all(r["parties"] == n for r in rows)


@pytest.mark.timeout(300)
def test_every_round_has_fresh_keys_and_a_party_lost_between_rounds_restarts_the_protocol(
    tmp_path: Path,
) -> None:
    def on_round(server_round: int, parties: InProcessParties) -> None:
        if server_round == 2:  # after sharing round 3's keys, one party goes away
            parties.offline.add(104)

    secure, (parties, recorder) = _federate(tmp_path / "secure", 4, secagg=True, on_round=on_round)
    plain, _ = _federate(tmp_path / "plain", 4, secagg=False, on_round=on_round)
    # The lost party's masks were removed from round 3's sum: the model is plain FedAvg's.
    for p, s in zip(plain, secure, strict=True):
        np.testing.assert_allclose(s, p, atol=1e-3)
    n = len(parties.contexts)
    # Key pairs for round 1 (5 parties), ahead for rounds 2 and 3 (5 each), ahead for round 4 (the
    # 4 left) and again for round 4 in its full setup (4): never one key twice.
    assert len(parties.public_keys) == 2 * (5 + 5 + 5 + 4 + 4)
    assert len(set(parties.public_keys)) == len(parties.public_keys)
    # Round 3: the keys shared ahead include the lost party, which then sends no masked vector:
    # it is a dropout after key sharing, unmasked from the others' shares, and the round completes.
    assert recorder.rounds[2]["parties"] == n - 1
    assert recorder.rounds[2]["stage_seconds"][:2] == [0.0, 0.0]
    # Round 4: nothing was set up ahead for the lost party, so every stage runs again, for all.
    round4 = parties.stages[-(n + 3 * (n - 1)) :]
    assert [s for _, s, _ in round4] == [Stage.SETUP] * n + (
        [Stage.SHARE_KEYS] * (n - 1) + [Stage.COLLECT_MASKED_VECTORS] * (n - 1) + [Stage.UNMASK] * (n - 1)
    )
    assert recorder.rounds[3]["parties"] == n - 1


_SETUP: dict[str, Any] = {
    Key.STAGE: Stage.SETUP,
    Key.SAMPLE_NUMBER: 3,
    Key.SHARE_NUMBER: 3,
    Key.THRESHOLD: 2,
    Key.CLIPPING_RANGE: 8.0,
    Key.TARGET_RANGE: 1 << 22,
    Key.MOD_RANGE: 1 << 32,
    Key.MAX_WEIGHT: 1000.0,
}


def test_a_stale_next_round_is_dropped_by_a_real_setup() -> None:
    """A party that prepared a next round the server did not use starts over when set up again."""
    ctx = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    ctx.state.config_records[NEXT_STATE] = ConfigRecord({"current_stage": Stage.SETUP})
    msg = Message(
        RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(dict(_SETUP))}), dst_node_id=7, message_type="train"
    )
    reply = secagg_with_next_round(msg, ctx, lambda m, c: m)
    assert not reply.has_error()
    assert NEXT_STATE not in ctx.state.config_records
    assert {Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2} <= set(reply.content.config_records[RECORD_KEY_CONFIGS])


def test_ahead_answers_are_used_only_when_the_whole_sample_matches() -> None:
    ahead = KeyAhead()
    ahead.sent_setup = {Key.STAGE: Stage.SETUP, Key.SAMPLE_NUMBER: 2}
    ahead.setup_answers = {1: {"pk": 1}, 2: {"pk": 2}}
    ahead.plan = {1: {1, 2}, 2: {1, 2}}
    ahead.sent_share = {1: {"s": 1}, 2: {"s": 2}}
    ahead.share_answers = {1: {"c": 1}}  # party 2's key sharing never came back
    asked: list[int] = []

    class Grid:
        def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
            asked.extend(m.metadata.dst_node_id for m in messages)
            return []

    msgs = [
        Message(
            RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(dict(ahead.sent_setup))}),
            dst_node_id=n,
            message_type="train",
        )
        for n in (1, 2)
    ]
    ahead.setup_grid(Grid()).send_and_receive(msgs)  # type: ignore[arg-type]
    assert asked == [1, 2] and not ahead.ready  # everyone is set up again, not just party 2
    assert ahead.setup_answers == {} and ahead.share_answers == {}  # answers are used once, or never


def test_attached_values_come_back_out_and_leave_the_record_as_it_was() -> None:
    record = ConfigRecord({Key.STAGE: Stage.UNMASK})
    attach(record, NEXT_SHARE_KEYS, {"7": [b"a", b"b"], Key.STAGE: Stage.SHARE_KEYS})
    assert detach(record, NEXT_SETUP) is None
    assert detach(record, NEXT_SHARE_KEYS) == {"7": [b"a", b"b"], Key.STAGE: Stage.SHARE_KEYS}
    assert dict(record) == {Key.STAGE: Stage.UNMASK}


def test_planned_neighbours_are_a_ring_of_the_share_number() -> None:
    plan = plan_neighbours({1, 2, 3, 4, 5, 6, 7}, 3)
    assert set(plan) == {1, 2, 3, 4, 5, 6, 7}
    assert all(nid in ns and len(ns) == 3 for nid, ns in plan.items())
    assert all(nid in plan[m] for nid, ns in plan.items() for m in ns)  # symmetric
    assert plan_neighbours({1, 2, 3}, 3) == {n: {1, 2, 3} for n in (1, 2, 3)}
    with pytest.raises(ValueError, match="num_shares"):
        plan_neighbours({1, 2}, 0)


def test_a_party_runs_nothing_ahead_on_a_message_not_meant_to_carry_it() -> None:
    """Setup rides only on a masked-vector request, key sharing only on an unmask request."""
    ctx = Context(run_id=1, node_id=7, node_config={}, state=RecordDict(), run_config={})
    cfg = ConfigRecord(dict(_SETUP))
    attach(cfg, NEXT_SETUP, _SETUP)
    attach(cfg, NEXT_SHARE_KEYS, {Key.STAGE: Stage.SHARE_KEYS, "7": [b"a", b"b"]})
    msg = Message(RecordDict({RECORD_KEY_CONFIGS: cfg}), dst_node_id=7, message_type="train")
    reply = secagg_with_next_round(msg, ctx, lambda m, c: m)
    out = dict(reply.content.config_records[RECORD_KEY_CONFIGS])
    assert set(out) == {Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2}  # this setup's answer, nothing ahead
    assert NEXT_STATE not in ctx.state.config_records
