"""SecAgg+ with the next round's key setup and key sharing carried by this round's messages.

A SecAgg+ round is four message round trips (setup: fresh key pairs; share keys: Shamir shares of
the new secrets, encrypted to each neighbour; masked vectors; unmask), and on a busy machine each
costs about as much as a whole plain-FedAvg round: the cryptography itself is a few milliseconds
per party (profiled: well under 1% of the federation's CPU time), the rest is Flower's
per-message cost. Neither of the first two stages depends on the round's model, so they run one
round early, riding on messages that are sent anyway:

* round r's masked-vector request carries round r+1's setup instruction; each party builds its
  masked vector (round r's keys), then generates round r+1's fresh key pairs (Flower's own
  ``secaggplus_mod``, on a second, separate protocol state) and returns the public keys with the
  masked vector;
* round r's unmask request carries round r+1's key-sharing instruction (the neighbours' new public
  keys, for a neighbour relation drawn now for round r+1); each party answers round r's unmask,
  then shares round r+1's secrets (encrypted to the neighbours, as in a normal share-keys stage),
  and its round r+1 state becomes its current one: round r is over for it.

Round r+1 then starts directly with the masked-vector stage: two round trips per round after the
first. What SecAgg+ guarantees is unchanged: every round has its own freshly generated key pairs
and secrets (never reused, never derived from the previous round's), the server still only
routes ciphertexts it cannot read and learns only the sum, and a party that drops after sharing
its keys (even between rounds) is unmasked from its neighbours' shares exactly as in a normal
round. The server does learn the next round's public keys and encrypted shares one round
earlier, which tells it nothing.

The answers given ahead are used all or nothing: only if round r+1 samples exactly the parties
that answered both ahead stages, with the same protocol parameters; otherwise (a party dropped,
was rejected, or joined) the server runs Flower's own setup for everyone, which restarts every
party's protocol state, and the key sharing that follows it.

What rides along is put into the stage's own SecAgg+ config record under a prefix (one record,
one stored object, fewer HTTP requests than a record of its own), and taken out before Flower's
code on either side sees the record.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from typing import Any, cast

from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import ConfigRecord, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)
from flwr.serverapp import Grid
from flwr.supercore import log

NEXT_SETUP = "modelplane.next-setup:"  # key prefix: the next round's setup instruction, or its answer
NEXT_SHARE_KEYS = "modelplane.next-share-keys:"  # the next round's key sharing, or its answer
NEXT_STATE = "modelplane.secaggplus-next-state"  # party context: the next round's protocol state


def attach(record: ConfigRecord, prefix: str, values: Mapping[str, Any]) -> None:
    """Add ``values`` to ``record`` under ``prefix``."""
    for key, value in values.items():
        record[prefix + key] = value


def detach(record: ConfigRecord, prefix: str) -> dict[str, Any] | None:
    """Take the values stored under ``prefix`` out of ``record`` (None when there are none)."""
    keys = [k for k in record if k.startswith(prefix)]
    if not keys:
        return None
    return {k[len(prefix) :]: record.pop(k) for k in keys}


# --- party side ----------------------------------------------------------------------------------


def secagg_with_next_round(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Party side: SecAgg+ for the messages that run it, plus the next round's stages sent ahead.

    A masked-vector request may carry the next setup, an unmask request the next key sharing;
    each is run after this round's stage, on the next round's own protocol state, and answered in
    the same reply. A failure there leaves this round's answer intact (the server then runs the
    stages itself).
    """
    records = msg.content.config_records
    configs = records.get(RECORD_KEY_CONFIGS)
    if configs is None:
        return call_next(msg, ctxt)
    stage = configs.get(Key.STAGE)
    setup = detach(configs, NEXT_SETUP)
    share = detach(configs, NEXT_SHARE_KEYS)
    # Only these two stages ever run ahead, each on the one message that may carry it; anything
    # else (a server asking for a next round's masked vector or unmasking early) is ignored.
    if stage != Stage.COLLECT_MASKED_VECTORS or (setup or {}).get(Key.STAGE) != Stage.SETUP:
        setup = None
    if stage != Stage.UNMASK or (share or {}).get(Key.STAGE) != Stage.SHARE_KEYS:
        share = None
    if stage == Stage.SETUP:  # the server restarts the protocol: whatever was prepared is void
        ctxt.state.config_records.pop(NEXT_STATE, None)
    reply = secaggplus_mod(msg, ctxt, call_next)
    if reply.has_error():
        return reply
    out = reply.content.config_records[RECORD_KEY_CONFIGS]
    if setup is not None:
        answer = _next_stage(msg, ctxt, call_next, setup, fresh=True)
        if answer is not None:
            attach(out, NEXT_SETUP, answer)
    if share is not None:
        answer = _next_stage(msg, ctxt, call_next, share, fresh=False)
        following = ctxt.state.config_records.pop(NEXT_STATE, None)
        if answer is not None and following is not None:
            attach(out, NEXT_SHARE_KEYS, answer)
            # This round is over (unmasked): the next round's state becomes the current one.
            ctxt.state.config_records[RECORD_KEY_STATE] = following
    return reply


def _next_stage(
    msg: Message, ctxt: Context, call_next: ClientAppCallable, configs: dict[str, Any], *, fresh: bool
) -> dict[str, Any] | None:
    """Run one SecAgg+ stage on the next round's state (a new one when ``fresh``); its answer.

    ``ctxt.state.config_records`` is read afresh each time: Flower builds it as a snapshot whose
    writes reach the state but which does not see later changes.
    """
    current = ctxt.state.config_records.pop(RECORD_KEY_STATE, None)
    following = ctxt.state.config_records.pop(NEXT_STATE, None)
    if not fresh:
        if following is None:  # nothing was set up ahead: the server will run the stages itself
            if current is not None:
                ctxt.state.config_records[RECORD_KEY_STATE] = current
            return None
        ctxt.state.config_records[RECORD_KEY_STATE] = following
    original = msg.content
    msg.content = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(dict(configs))})
    answer: dict[str, Any] | None = None
    try:
        reply = secaggplus_mod(msg, ctxt, call_next)
        if not reply.has_error():
            answer = dict(reply.content.config_records[RECORD_KEY_CONFIGS])
    except Exception as exc:  # the server then runs the stage itself, after a restart
        log(logging.WARNING, "SecAgg+ stage sent ahead failed: %s", exc)
    finally:
        msg.content = original
        after = ctxt.state.config_records.pop(RECORD_KEY_STATE, None)
        if answer is not None and after is not None:
            ctxt.state.config_records[NEXT_STATE] = after
        if current is not None:
            ctxt.state.config_records[RECORD_KEY_STATE] = current
    return answer


# --- server side ---------------------------------------------------------------------------------


def plan_neighbours(
    nodes: set[int], num_shares: int, rng: random.Random | None = None
) -> dict[int, set[int]]:
    """A SecAgg+ neighbour relation over ``nodes``, drawn as Flower's setup stage draws it.

    Each node's neighbours are the ``num_shares // 2`` nodes either side of it (and itself) in a
    random ring order.
    """
    if num_shares < 1:
        raise ValueError(f"num_shares must be >= 1, got {num_shares}")
    order = sorted(nodes)
    (rng or random.SystemRandom()).shuffle(order)
    half, n = num_shares >> 1, len(order)
    return {nid: {order[(i + off) % n] for off in range(-half, half + 1)} for i, nid in enumerate(order)}


class KeyAhead:
    """Server side: what was sent ahead for the next round, the parties' answers, and the plan."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng
        self.setup: dict[str, Any] | None = None  # the last setup stage's instruction
        self.num_shares = 0  # the last setup's share number (after Flower's adjustments)
        self.sent_setup: dict[str, Any] | None = None  # the setup the masked-vector requests carried
        self.setup_answers: dict[int, dict[str, Any]] = {}  # node -> its next-round public keys
        self.plan: dict[int, set[int]] = {}  # the next round's neighbour relation
        self.sent_share: dict[int, dict[str, Any]] = {}  # node -> the key sharing it was sent
        self.share_answers: dict[int, dict[str, Any]] = {}  # node -> its encrypted shares
        self.ready = False  # this round's setup and key sharing were answered ahead
        self.current_plan: dict[int, set[int]] = {}  # this round's relation, when ready
        self._share: tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]] = ({}, {})

    def clear(self) -> None:
        """Forget everything sent ahead (the next round runs every stage)."""
        self.sent_setup, self.setup_answers, self.plan = None, {}, {}
        self.sent_share, self.share_answers = {}, {}

    def setup_grid(self, grid: Grid, on_skipped: Callable[[], None] | None = None) -> Grid:
        """The grid for a setup stage: answered from what came ahead, if all of it matches."""
        return cast(Grid, _Setup(grid, self, on_skipped))

    def share_keys_grid(self, grid: Grid, on_skipped: Callable[[], None] | None = None) -> Grid:
        """The grid for a share-keys stage: answered ahead when the setup was (``ready``)."""
        return cast(Grid, _ShareKeys(grid, self, on_skipped))

    def masked_grid(self, grid: Grid) -> Grid:
        """The grid for a masked-vector stage whose requests carry the next setup."""
        return cast(Grid, _MaskedWithNextSetup(grid, self))

    def unmask_grid(self, grid: Grid) -> Grid:
        """The grid for an unmask stage whose requests carry the next key sharing."""
        return cast(Grid, _UnmaskWithNextShareKeys(grid, self))

    def neighbours(self, sampled: set[int]) -> dict[int, set[int]]:
        """The neighbour relation the keys were shared for (this round, when ``ready``)."""
        if not self.ready or set(self.current_plan) != sampled:
            raise RuntimeError("no neighbour relation was planned for this sample")
        return {nid: set(ns) for nid, ns in self.current_plan.items()}


class _Forward:
    def __init__(self, grid: Grid, ahead: KeyAhead) -> None:
        self._grid, self._ahead = grid, ahead

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def _configs(msg: Message) -> dict[str, Any]:
    return dict(msg.content.config_records[RECORD_KEY_CONFIGS])


def _answer(msg: Message, values: Mapping[str, Any]) -> Message:
    return Message(RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(dict(values))}), reply_to=msg)


class _Setup(_Forward):
    def __init__(self, grid: Grid, ahead: KeyAhead, on_skipped: Callable[[], None] | None) -> None:
        super().__init__(grid, ahead)
        self._on_skipped = on_skipped

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        a = self._ahead
        sent = list(messages)
        setups = [_configs(m) for m in sent]
        a.setup = setups[0] if setups else None
        nodes = {m.metadata.dst_node_id for m in sent}
        a.ready = bool(sent) and (
            all(s == a.sent_setup for s in setups)
            and nodes == set(a.setup_answers) == set(a.plan) == set(a.share_answers) == set(a.sent_share)
        )
        replies = [_answer(m, a.setup_answers[m.metadata.dst_node_id]) for m in sent] if a.ready else []
        a.current_plan = a.plan if a.ready else {}
        a._share = (a.sent_share, a.share_answers) if a.ready else ({}, {})
        a.clear()
        if not a.ready:  # Flower's setup for everyone: it restarts every party's protocol state
            return list(self._grid.send_and_receive(sent, timeout=timeout))
        if self._on_skipped is not None:
            self._on_skipped()
        return replies


class _ShareKeys(_Forward):
    def __init__(self, grid: Grid, ahead: KeyAhead, on_skipped: Callable[[], None] | None) -> None:
        super().__init__(grid, ahead)
        self._on_skipped = on_skipped

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        sent = list(messages)
        sent_share, answers = self._ahead._share
        self._ahead._share = ({}, {})
        if not self._ahead.ready:
            return list(self._grid.send_and_receive(sent, timeout=timeout))
        if any(_configs(m) != sent_share.get(m.metadata.dst_node_id) for m in sent):
            # Cannot happen when the setup matched (the same keys and neighbours build both); the
            # parties already shared for what was sent ahead, so this round is abandoned, safely.
            log(logging.ERROR, "SecAgg+ key sharing differs from what was sent ahead; round abandoned")
            return []
        if self._on_skipped is not None:
            self._on_skipped()
        return [_answer(m, answers[m.metadata.dst_node_id]) for m in sent]


class _MaskedWithNextSetup(_Forward):
    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        a = self._ahead
        sent = list(messages)
        a.sent_setup, a.setup_answers = a.setup, {}
        if a.setup is not None:
            for msg in sent:
                attach(msg.content.config_records[RECORD_KEY_CONFIGS], NEXT_SETUP, a.setup)
        replies = list(self._grid.send_and_receive(sent, timeout=timeout))
        for reply in replies:
            if reply.has_error() or RECORD_KEY_CONFIGS not in reply.content.config_records:
                continue
            answer = detach(reply.content.config_records[RECORD_KEY_CONFIGS], NEXT_SETUP)
            if answer is not None and {Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2} <= answer.keys():
                a.setup_answers[reply.metadata.src_node_id] = answer
        return replies


class _UnmaskWithNextShareKeys(_Forward):
    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        a = self._ahead
        sent = list(messages)
        a.sent_share, a.share_answers, a.plan = {}, {}, {}
        planned = set(a.setup_answers)
        if len(planned) >= 2 and a.num_shares >= 1 and {m.metadata.dst_node_id for m in sent} >= planned:
            a.plan = plan_neighbours(planned, a.num_shares, a.rng)
            for msg in sent:
                nid = msg.metadata.dst_node_id
                if nid not in planned:
                    continue
                share: dict[str, Any] = {
                    str(n): [a.setup_answers[n][Key.PUBLIC_KEY_1], a.setup_answers[n][Key.PUBLIC_KEY_2]]
                    for n in a.plan[nid]
                }
                share[Key.STAGE] = Stage.SHARE_KEYS
                a.sent_share[nid] = share
                attach(msg.content.config_records[RECORD_KEY_CONFIGS], NEXT_SHARE_KEYS, share)
        replies = list(self._grid.send_and_receive(sent, timeout=timeout))
        for reply in replies:
            if reply.has_error() or RECORD_KEY_CONFIGS not in reply.content.config_records:
                continue
            answer = detach(reply.content.config_records[RECORD_KEY_CONFIGS], NEXT_SHARE_KEYS)
            if answer is not None and {Key.DESTINATION_LIST, Key.CIPHERTEXT_LIST} <= answer.keys():
                a.share_answers[reply.metadata.src_node_id] = answer
        return replies
