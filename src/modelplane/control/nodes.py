"""Node health: a node silent for longer than the timeout becomes NotReady, which moves its jobs.

The embedded node agent sends heartbeats for the nodes this machine hosts (every node, under the
local backend), as a kubelet would for its own node.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from modelplane.control.base import Controller
from modelplane.core.errors import Conflict, NotFound
from modelplane.core.node import NodeState
from modelplane.store import Store


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
    """Heartbeats for the nodes hosted by this process (all nodes when the local backend runs them)."""

    name = "node-agent"

    def __init__(self, store: Store, node_names: Callable[[], Iterable[str]]) -> None:
        self.store = store
        self.node_names = node_names

    def reconcile(self) -> None:
        for name in self.node_names():
            try:
                self.store.heartbeat_node(name)
            except NotFound:
                continue
