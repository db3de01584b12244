"""Node health: a node silent for longer than the timeout becomes NotReady, which moves its jobs.

The embedded node agent sends heartbeats for the nodes this machine hosts (every node, under the
local backend), as a kubelet would for its own node; with peer memory on, it also runs the pool's
peer-memory checkpoint tier (one redis-server for this machine) and publishes its URL on those
nodes. On a real pool each node runs its own agent process instead (``modelplane node-agent``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable

from modelplane.agent.peers import PEER_MEMORY_LABEL
from modelplane.agent.redis_tier import PeerMemoryServer
from modelplane.control.base import Controller
from modelplane.core.errors import Conflict, ModelplaneError, NotFound
from modelplane.core.node import NodeState
from modelplane.obs.metrics import PEER_MEMORY_RESTARTS
from modelplane.store import Store

log = logging.getLogger("modelplane.control.nodes")


class NodeHealthController(Controller):
    name = "node-health"

    def __init__(self, store: Store, clock: Callable[[], float], timeout_seconds: float) -> None:
        self.store = store
        self.clock = clock
        self.timeout = timeout_seconds

    def reconcile(self) -> None:
        now = self.clock()
        for n in self.store.list_nodes():
            silent = n.last_heartbeat is None or now - n.last_heartbeat > self.timeout
            if silent and n.state is NodeState.READY:
                with contextlib.suppress(Conflict):
                    self.store.set_node_state(n.name, NodeState.NOT_READY, expected_version=n.resource_version)


class EmbeddedNodeAgent(Controller):
    """Heartbeats for the nodes hosted by this process (all nodes when the local backend runs them),
    and, given a ``peer_memory`` server, that server's supervision and its URL on those nodes.

    The URL is written where a node has none, or still has the one an earlier run of this process
    published: a node whose own agent process published its Redis keeps it (that agent removes it
    when it stops)."""

    name = "node-agent"

    def __init__(self, store: Store, node_names: Callable[[], Iterable[str]],
                 peer_memory: PeerMemoryServer | None = None) -> None:
        self.store = store
        self.node_names = node_names
        self.peer_memory = peer_memory
        self._peer_error = ""

    def _supervise_peer_memory(self) -> str | None:
        """The running server's URL (started, or started again after it died), None when it cannot run."""
        assert self.peer_memory is not None
        try:
            if self.peer_memory.ensure_running() and self.peer_memory.starts > 1:
                PEER_MEMORY_RESTARTS.inc()
        except ModelplaneError as exc:
            if exc.message != self._peer_error:  # once per distinct cause, not every round
                log.error("peer-memory tier is off: %s (%s)", exc.message, exc.hint)
            self._peer_error = exc.message
            return None
        self._peer_error = ""
        return self.peer_memory.url

    def reconcile(self) -> None:
        url = self._supervise_peer_memory() if self.peer_memory is not None else None
        ours = (None, self.peer_memory.previous_url) if self.peer_memory is not None else (None,)
        for name in self.node_names():
            try:
                node = self.store.heartbeat_node(name)
                published = node.spec.labels.get(PEER_MEMORY_LABEL)
                if url and published != url and published in ours:
                    spec = node.spec.model_copy(update={"labels": {**node.spec.labels, PEER_MEMORY_LABEL: url}})
                    with contextlib.suppress(Conflict):  # changed meanwhile: next round
                        self.store.upsert_node(spec, expected_version=node.resource_version)
            except NotFound:
                continue

    def close(self) -> None:
        if self.peer_memory is not None:
            self.peer_memory.stop()
