"""The Flower ServerApp: FedAvg or FedProx over the registered parties, optionally under SecAgg+.

It runs inside the SuperLink's ``flwr-serverapp`` process (the deployment engine), configured by
the run config that ``server.py`` submits. Before training it asks every SuperNode which party it
is (the roster: node id -> party name, so rejections name a party, not a number); after training
it writes ``model.npz``, ``metrics.json`` (one entry per round) and tells the parties to stop.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import Context, Message
from flwr.common import (
    FitRes,
    GetPropertiesIns,
    NDArrays,
    Parameters,
    Scalar,
    bytes_to_ndarray,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import MessageTypeLegacy
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg, FedProx
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp import Grid, ServerApp

from modelplane.privacy.horizontal import model
from modelplane.privacy.horizontal.data import read_shard
from modelplane.privacy.horizontal.keyahead import KeyAhead
from modelplane.privacy.horizontal.pulls import prompt_object_pulls
from modelplane.privacy.horizontal.screening import screen_masked_vector, screen_parameters
from modelplane.privacy.horizontal.supernode import Pacer

app = ServerApp()


@dataclass(frozen=True)
class Settings:
    """The run config (``[tool.flwr.app.config]`` in app/pyproject.toml, overridden per run)."""

    output_dir: str
    test_data: str
    rounds: int = 30
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    secagg: bool = True
    num_shares: float = 1.0
    reconstruction_threshold: float = 0.6
    min_parties: int = 5
    min_fit_parties: int = 3
    join_timeout: float = 120.0
    round_timeout: float = 30.0
    local_epochs: int = 2
    learning_rate: float = 0.5
    batch_size: int = 32
    max_update_norm: float = 50.0
    clipping_range: float = 8.0

    @classmethod
    def from_run_config(cls, cfg: dict[str, Any]) -> Settings:
        names = {f: f.replace("_", "-") for f in cls.__dataclass_fields__}
        kwargs = {f: cfg[k] for f, k in names.items() if k in cfg}
        return cls(**kwargs)


@dataclass
class Recorder:
    """Per-round metrics, appended as the run goes; written after every round."""

    path: Path
    roster: dict[int, str]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # this round's, moved into the row
    dropped: list[str] = field(default_factory=list)
    contributed: int = 0
    stages: list[float] = field(default_factory=list)  # seconds of each send-and-wait this round
    last: float = field(default_factory=time.perf_counter)

    def reject(self, node_id: int | None, reason: str) -> None:
        party = self.roster.get(node_id, f"node {node_id}") if node_id is not None else "(aggregate)"
        self.rejected.append({"party": party, "reason": reason})

    def close_round(self, server_round: int, loss: float, accuracy: float) -> None:
        now = time.perf_counter()
        self.rounds.append(
            {
                "round": server_round,
                "seconds": now - self.last,
                "loss": loss,
                "accuracy": accuracy,
                "parties": self.contributed,
                "rejected": self.rejected,
                "dropped": self.dropped,
                "stage_seconds": [round(t, 3) for t in self.stages],
            }
        )
        self.rejected, self.dropped, self.contributed, self.stages = [], [], 0, []
        self.path.write_text(json.dumps(self.rounds, indent=1))
        self.last = time.perf_counter()


class _Screened:
    """Leaves malformed or out-of-range updates out of the average; the round goes on without them."""

    recorder: Recorder
    settings: Settings
    secagg: bool
    _global: NDArrays

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, Any]]:
        self._global = parameters_to_ndarrays(parameters)
        return super().configure_fit(server_round, parameters, client_manager)  # type: ignore[misc,no-any-return]

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        kept = []
        if self.secagg and results:
            # Every result carries the same unmasked sum: check it once, as one update.
            why = screen_parameters(
                parameters_to_ndarrays(results[0][1].parameters), self._global, self.settings.max_update_norm
            )
            if why is not None:
                self.recorder.reject(None, why)
            else:
                kept = results
        else:
            for proxy, res in results:
                try:
                    arrays = parameters_to_ndarrays(res.parameters)
                    why = screen_parameters(arrays, self._global, self.settings.max_update_norm)
                except (ValueError, TypeError) as exc:
                    why = f"undecodable parameters: {exc}"
                if why is None and not 0 < res.num_examples <= 1_000_000:
                    why = f"num_examples {res.num_examples} out of range"
                if why is not None:
                    self.recorder.reject(int(proxy.cid), why)
                else:
                    kept.append((proxy, res))
        self.recorder.contributed = len(kept)
        if not kept:
            return None, {}
        return super().aggregate_fit(server_round, kept, failures)  # type: ignore[misc,no-any-return]


class ScreenedFedAvg(_Screened, FedAvg):
    pass


class ScreenedFedProx(_Screened, FedProx):
    pass


class PromptGrid:
    """The run's Grid, polling for replies at a pace (10 ms, growing to 0.25 s) instead of Flower's fixed 3 s.

    Every SecAgg+ stage is one send-and-wait, so the poll interval is paid four times per round;
    with screening on, replies carrying a malformed masked vector are dropped here (their party
    named), which makes that party a dropout for the rest of the protocol.
    """

    def __init__(self, grid: Grid, recorder: Recorder | None = None, poll: float = 0.25) -> None:
        self._grid, self._recorder, self._poll = grid, recorder, poll
        self.modulus: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def screening(self, modulus: int) -> PromptGrid:
        out = PromptGrid(self._grid, self._recorder, self._poll)
        out.modulus = modulus
        return out

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> list[Message]:
        started = time.perf_counter()
        sent = list(messages)
        waiting = set(self._grid.push_messages(sent))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        pace = Pacer(fast=min(0.01, self._poll), slow=self._poll, growth=1.3)
        while waiting:
            got = list(self._grid.pull_messages(waiting))
            replies.extend(got)
            waiting -= {m.metadata.reply_to_message_id for m in got}
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            if got:
                pace.active()
            time.sleep(pace.idle())
        if self._recorder is None:
            return replies
        self._recorder.stages.append(time.perf_counter() - started)
        out = [m for m in replies if self.modulus is None or not self._malformed(m)]
        answered = {m.metadata.src_node_id for m in replies}
        for m in sent:
            if m.metadata.dst_node_id not in answered:
                party = self._recorder.roster.get(m.metadata.dst_node_id, str(m.metadata.dst_node_id))
                if party not in self._recorder.dropped:
                    self._recorder.dropped.append(party)
        return out

    def _malformed(self, msg: Message) -> bool:
        assert self._recorder is not None and self.modulus is not None
        if msg.has_error() or RECORD_KEY_CONFIGS not in msg.content.config_records:
            return False
        cfg = msg.content.config_records[RECORD_KEY_CONFIGS]
        if Key.MASKED_PARAMETERS not in cfg:
            return False
        try:
            arrays = [bytes_to_ndarray(b) for b in cast(list[bytes], cfg[Key.MASKED_PARAMETERS])]
            why = screen_masked_vector(arrays, model.shapes(), self.modulus)
        except (ValueError, TypeError, OSError) as exc:
            why = f"undecodable masked vector: {exc}"
        if why is not None:
            self._recorder.reject(msg.metadata.src_node_id, why)
            return True
        return False


class ScreenedSecAggPlus(SecAggPlusWorkflow):
    """Flower's SecAgg+ with screening, dropout fixes and the next round's keys set up ahead (``keyahead.py``)."""

    def __init__(self, recorder: Recorder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recorder = recorder
        self.ahead = KeyAhead()

    def _screening(self, grid: Grid) -> Grid:
        base = grid if isinstance(grid, PromptGrid) else PromptGrid(grid, self.recorder)
        return cast(Grid, base.screening(self.modulus_range))

    def _skipped(self) -> None:
        # A stage answered ahead took no time of its own: a 0 keeps the four stages in the metrics.
        self.recorder.stages.append(0.0)

    def _has_next_round(self, context: LegacyContext) -> bool:
        current = int(cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND]))
        return current < context.config.num_rounds

    def setup_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        self.ahead.ready = False  # set by the setup grid, if this round's keys came ahead
        ok = bool(
            super().setup_stage(self.ahead.setup_grid(self._screening(grid), self._skipped), context, state)
        )
        if getattr(state, "num_shares", 0):
            self.ahead.num_shares = int(state.num_shares)
        if ok and self.ahead.ready:
            # The keys were shared for the neighbour relation drawn a round ahead: use that one.
            state.nid_to_neighbours = self.ahead.neighbours(set(state.sampled_node_ids))
            ok = self._check_threshold(state)
        return ok

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        shares = self.ahead.share_keys_grid(self._screening(grid), self._skipped)
        ok = bool(super().share_keys_stage(shares, context, state))
        # A party that did not share its key never masked anything and nobody holds its shares:
        # it leaves the protocol. Flower 1.42 keeps it as "dead", so the survivors are later asked
        # for shares they never received and fail (KeyError in secaggplus_mod's unmask).
        survivors = set(state.active_node_ids)
        state.sampled_node_ids = set(survivors)
        for nid in list(state.nid_to_neighbours):
            if nid in survivors:
                state.nid_to_neighbours[nid] &= survivors
            else:
                del state.nid_to_neighbours[nid]
        return ok

    def collect_masked_vectors_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        screened = self._screening(grid)
        if self._has_next_round(context):  # the next round's key setup rides along
            screened = self.ahead.masked_grid(screened)
        return bool(super().collect_masked_vectors_stage(screened, context, state))

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        # For a party that dropped after sharing its key, only the masks it shares with parties
        # whose vectors are in the sum need removing; Flower 1.42 removes those with every
        # neighbour, which is wrong as soon as two parties drop.
        summed = set(state.active_node_ids)
        for nid in set(state.sampled_node_ids) - summed:
            state.nid_to_neighbours[nid] = (state.nid_to_neighbours[nid] & summed) | {nid}
        screened = self._screening(grid)
        if self._has_next_round(context):  # the next round's key sharing rides along
            screened = self.ahead.unmask_grid(screened)
        return bool(super().unmask_stage(screened, context, state))


def _ask(
    grid: Grid, node_ids: list[int], config: dict[str, Scalar], timeout: float
) -> dict[int, dict[str, Any]]:
    content = compat.getpropertiesins_to_recorddict(GetPropertiesIns(config=config))
    msgs = [
        Message(content=content, dst_node_id=nid, message_type=MessageTypeLegacy.GET_PROPERTIES)
        for nid in node_ids
    ]
    out = {}
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        if not reply.has_error():
            out[reply.metadata.src_node_id] = dict(
                compat.recorddict_to_getpropertiesres(reply.content).properties
            )
    return out


def _roster(grid: Grid, s: Settings) -> dict[int, str]:
    deadline = time.monotonic() + s.join_timeout
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= s.min_parties:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(nodes)} of {s.min_parties} parties joined within {s.join_timeout:g}s"
            )
        time.sleep(0.5)
    answers = _ask(grid, nodes, {}, s.join_timeout)
    return {nid: str(props.get("party", f"node {nid}")) for nid, props in answers.items()}


@app.main()
def main(grid: Grid, context: Context) -> None:
    s = Settings.from_run_config(dict(context.run_config))
    prompt_object_pulls()  # replies are pulled as soon as they are announced: see pulls.py
    prompt = PromptGrid(grid)
    out = Path(s.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    roster = _roster(cast(Grid, prompt), s)
    (out / "roster.json").write_text(json.dumps({str(k): v for k, v in roster.items()}))
    recorder = Recorder(out / "metrics.json", roster)
    grid = cast(Grid, PromptGrid(grid, recorder))
    x_test, y_test = read_shard(s.test_data)

    def evaluate(
        server_round: int, params: NDArrays, _cfg: dict[str, Scalar]
    ) -> tuple[float, dict[str, Scalar]]:
        loss, acc = model.evaluate(list(params), x_test, y_test)
        if server_round > 0:
            recorder.close_round(server_round, loss, acc)
        else:
            recorder.last = time.perf_counter()
        return loss, {"accuracy": acc}

    def fit_config(server_round: int) -> dict[str, Scalar]:
        return {
            "round": server_round,
            "epochs": s.local_epochs,
            "learning_rate": s.learning_rate,
            "batch_size": s.batch_size,
        }

    common: dict[str, Any] = dict(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=s.min_fit_parties,
        min_evaluate_clients=0,
        min_available_clients=s.min_fit_parties,
        evaluate_fn=evaluate,
        on_fit_config_fn=fit_config,
        accept_failures=True,
        initial_parameters=ndarrays_to_parameters(model.zeros()),
    )
    if s.strategy == "fedprox":
        strategy: _Screened = ScreenedFedProx(proximal_mu=s.proximal_mu, **common)
    elif s.strategy == "fedavg":
        strategy = ScreenedFedAvg(**common)
    else:
        raise ValueError(f"strategy must be fedavg or fedprox, got {s.strategy!r}")
    strategy.recorder, strategy.settings, strategy.secagg = recorder, s, s.secagg
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(num_rounds=s.rounds, round_timeout=s.round_timeout),
        strategy=strategy,  # type: ignore[arg-type]
    )
    fit_workflow = (
        ScreenedSecAggPlus(
            recorder,
            num_shares=s.num_shares,
            reconstruction_threshold=s.reconstruction_threshold,
            clipping_range=s.clipping_range,
            timeout=s.round_timeout,
        )
        if s.secagg
        else None
    )
    started = time.perf_counter()
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
    final = compat.arrayrecord_to_parameters(legacy.state.array_records[MAIN_PARAMS_RECORD], True)
    weights = parameters_to_ndarrays(final)
    np.savez(out / "model.npz", W=weights[0], b=weights[1])
    loss, acc = model.evaluate(weights, x_test, y_test)
    summary = {
        "rounds": len(recorder.rounds),
        "accuracy": acc,
        "loss": loss,
        "seconds": time.perf_counter() - started,
        "secagg": s.secagg,
        "strategy": s.strategy,
        "parties": sorted(roster.values()),
        "settings": asdict(s),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    # Tell the parties to stop. A party that goes away between taking the message and pushing
    # its reply would leave Flower pulling that reply forever, so this waits a bounded time.
    notify = threading.Thread(
        target=_ask, args=(grid, list(grid.get_node_ids()), {"finished": 1}, 10.0), daemon=True
    )
    notify.start()
    notify.join(15.0)
