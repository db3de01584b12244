"""The control plane's own node agent (local backend): one Redis for the pool, published on every
node that no agent process of its own speaks for."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from modelplane.agent.peers import PEER_MEMORY_LABEL
from modelplane.agent.redis_tier import PeerMemoryServer
from modelplane.control.nodes import EmbeddedNodeAgent
from modelplane.core.node import NodeState
from modelplane.obs.metrics import REGISTRY
from modelplane.store import Store
from tests.helpers import gpu_node


def labels(store: Store) -> dict[str, str | None]:
    return {n.name: n.spec.labels.get(PEER_MEMORY_LABEL) for n in store.list_nodes()}


def test_embedded_agent_publishes_keeps_others_urls_and_restarts_its_server(store: Store, tmp_path: Path):
    store.upsert_node(gpu_node("n1"))
    store.upsert_node(gpu_node("n2", labels={PEER_MEMORY_LABEL: "redis://10.0.0.2:6390/0"}))  # n2's own agent
    taken = socket.socket()  # the port an earlier run used is taken now: a new URL replaces its stale one
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    stale = f"redis://127.0.0.1:{taken.getsockname()[1]}/0"
    store.upsert_node(gpu_node("n3", labels={PEER_MEMORY_LABEL: stale}))
    (tmp_path / "pm").mkdir()
    (tmp_path / "pm" / "url").write_text(stale + "\n")  # what that earlier run published
    store.set_node_state("n1", NodeState.NOT_READY)
    server = PeerMemoryServer(tmp_path / "pm")
    agent = EmbeddedNodeAgent(store, lambda: ["n1", "n2", "n3"], peer_memory=server)
    try:
        agent.reconcile()
        url = server.url
        assert url != stale
        assert labels(store) == {"n1": url, "n2": "redis://10.0.0.2:6390/0", "n3": url}
        assert store.get_node("n1").state is NodeState.READY  # heartbeats go on as before
        before = REGISTRY.get_sample_value("modelplane_peer_memory_restarts_total") or 0
        pid = server.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        agent.reconcile()
        assert server.pid not in (None, pid) and server.answers() and server.url == url
        assert REGISTRY.get_sample_value("modelplane_peer_memory_restarts_total") == before + 1
    finally:
        agent.close()
        taken.close()
    assert not server.answers()
