"""The Flower ClientApp: one party's local training on its own shard, run by its SuperNode.

The SuperNode's node config names the party (``party``), its shard (``shard``) and the file to
touch when the server says the run is over (``done-file``). SecAgg+ is applied only to the
messages that carry its protocol, so the same app serves plain and secure runs (and answers the
next round's key setup and key sharing along with this round's messages: ``keyahead.py``).

``fault`` in the node config makes this party misbehave on purpose, so that the server's screening
can be exercised with real processes: ``nan`` / ``scale`` / ``shape`` corrupt the plaintext
parameters, ``masked-shape`` / ``masked-range`` corrupt the SecAgg+ masked vector after masking,
``stall-masking`` hangs when asked for the masked vector (after this party's key shares went out),
saying so on stdout, so that a test can kill it at exactly that point of the round
(``stall-masking:N``: of round N only, whose keys were shared a round ahead when N > 1).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import Context, Message
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import NDArrays, Scalar, bytes_to_ndarray, ndarray_to_bytes
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from modelplane.privacy.horizontal import model
from modelplane.privacy.horizontal.data import read_shard
from modelplane.privacy.horizontal.keyahead import secagg_with_next_round


@functools.lru_cache(maxsize=4)
def _shard(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The party's shard, read once per process: the warm executor runs every message here."""
    x, y = read_shard(path)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


class PartyClient(NumPyClient):
    def __init__(self, party: str, shard: str, done_file: str, fault: str, seed: int) -> None:
        self.party, self.done_file, self.fault, self.seed = party, done_file, fault, seed
        self.x, self.y = _shard(shard)

    def get_properties(self, config: dict[str, Scalar]) -> dict[str, Scalar]:
        if config.get("finished") and self.done_file:
            Path(self.done_file).write_text("finished\n")
        return {"party": self.party, "rows": len(self.y)}

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        return model.zeros()

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        cfg = model.LocalConfig(
            epochs=int(config.get("epochs", 2)),
            learning_rate=float(config.get("learning_rate", 0.5)),
            batch_size=int(config.get("batch_size", 32)),
            proximal_mu=float(config.get("proximal_mu", 0.0)),
        )
        rnd = int(config.get("round", 0))
        params = model.train_local(list(parameters), self.x, self.y, cfg, seed=self.seed * 1000 + rnd)
        if self.fault == "nan":
            params[0][0, 0] = np.nan
        elif self.fault == "scale":
            params = [p * 1e6 for p in params]
        elif self.fault == "shape":
            params = [params[0][:, :5], params[1]]
        loss, acc = model.evaluate(params, self.x, self.y)
        return params, len(self.y), {"train_loss": loss, "train_accuracy": acc}


def client_fn(context: Context) -> Any:
    nc = context.node_config
    return PartyClient(
        str(nc["party"]),
        str(nc["shard"]),
        str(nc.get("done-file", "")),
        str(nc.get("fault", "")),
        int(cast(int, nc.get("seed", 0))),
    ).to_client()


STALLED = "stalled before sending its masked vector"  # what a stall-masking party prints


def stall_round(fault: str) -> int | None:
    """The round a ``stall-masking`` fault stalls in: 0 for any, N for ``stall-masking:N``, None if not one."""
    name, _, rnd = fault.partition(":")
    if name != "stall-masking":
        return None
    if not rnd:
        return 0
    if not rnd.isdigit() or int(rnd) < 1:
        raise ValueError(f"stall-masking:N needs a round number N >= 1, got {fault!r}")
    return int(rnd)


def stall_before_masking(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """``fault`` = stall-masking[:N]: hang at the masked-vector stage (of round N), as a party that dies there would."""
    stall = stall_round(str(ctxt.node_config.get("fault", "")))
    if stall is not None:
        cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
        fit = msg.content.config_records.get("fitins.config")
        rnd = int(cast(int, fit.get("round", 0))) if fit is not None else 0
        if cfg is not None and cfg.get(Key.STAGE) == Stage.COLLECT_MASKED_VECTORS and stall in (0, rnd):
            print(f"party {ctxt.node_config.get('party')}: {STALLED}", flush=True)
            time.sleep(3600)
    return call_next(msg, ctxt)


def fault_after_masking(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Corrupts this party's masked vector after SecAgg+ built it (``fault`` = masked-*)."""
    reply = call_next(msg, ctxt)
    fault = str(ctxt.node_config.get("fault", ""))
    if not fault.startswith("masked-") or reply.has_error():
        return reply
    cfg = reply.content.config_records.get(RECORD_KEY_CONFIGS)
    if cfg is None or Key.MASKED_PARAMETERS not in cfg:
        return reply
    arrays = [bytes_to_ndarray(b) for b in cast(list[bytes], cfg[Key.MASKED_PARAMETERS])]
    if fault == "masked-shape":
        arrays = arrays[:-1]
    elif fault == "masked-range":
        arrays[1] = arrays[1].astype(np.int64) + (1 << 40)
    cfg[Key.MASKED_PARAMETERS] = [ndarray_to_bytes(a) for a in arrays]
    return reply


app = ClientApp(client_fn=client_fn, mods=[stall_before_masking, fault_after_masking, secagg_with_next_round])
