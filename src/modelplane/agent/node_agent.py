"""One node's agent loop: heartbeat, supervise the peer-memory server, watch for interruptions.

Everything goes through the API with the agent's token: the heartbeat keeps the node Ready, a
label patch publishes the peer-memory URL (again after anything removed it, e.g. a cluster file
re-imported with the node's original labels), and a spot notice becomes ``POST
/nodes/{name}/drain`` with reason ``SpotInterruption``. The job controller then moves the node's
training jobs the way it handles any drain: the preemption notice lets each job checkpoint at a
step boundary, it stops, and it is placed elsewhere without spending a restart.

The loop never dies of a failed call: an unreachable API or metadata service is logged and
tried again next round (a node that cannot reach the API turns NotReady on the server's side).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from modelplane.agent.errors import AgentError
from modelplane.agent.peers import PEER_MEMORY_LABEL
from modelplane.agent.redis_tier import PeerMemoryServer
from modelplane.agent.spot import InterruptionNotice, NoticeSource
from modelplane.core.errors import ModelplaneError
from modelplane.obs.metrics import PEER_MEMORY_RESTARTS, SPOT_NOTICES

log = logging.getLogger("modelplane.agent")


class NodeAgent:
    def __init__(self, client: Any, node: str, *, peer: PeerMemoryServer | None = None,
                 notice: NoticeSource | None = None, heartbeat_interval_s: float = 5.0,
                 notice_interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        """``client`` is a :class:`modelplane.client.Client` (anything with ``get``/``post``/``request``)."""
        for what, value in (("heartbeat interval", heartbeat_interval_s), ("notice interval", notice_interval_s)):
            if value <= 0:
                raise AgentError(f"the {what} must be positive, got {value:g} s",
                                 field=what.replace(" ", "_"), hint="give seconds, e.g. 5")
        self.client = client
        self.node = node
        self.peer = peer
        self.notice = notice
        self.heartbeat_interval = heartbeat_interval_s
        self.notice_interval = notice_interval_s
        self.clock = clock
        self.handled: InterruptionNotice | None = None  # the notice this node was drained for
        self._next_beat = 0.0
        self._next_notice = 0.0
        self._published = ""

    def check_node(self) -> dict[str, Any]:
        """Fail early, with the fix, when the node is not registered or the token may not act for it."""
        try:
            return dict(self.client.get(f"/nodes/{self.node}"))
        except ModelplaneError as exc:
            if getattr(exc, "status_code", 0) == 404:
                raise AgentError(f"node {self.node!r} is not registered with the control plane",
                                 field="node", hint="register it first (POST /api/v1/nodes, or the cluster "
                                 "file), and pass its exact name with --node") from None
            raise

    def run_once(self) -> None:
        now = self.clock()
        if self.peer is not None:
            try:
                if self.peer.ensure_running() and self.peer.starts > 1:
                    PEER_MEMORY_RESTARTS.inc()
            except AgentError as exc:
                log.error("peer-memory server: %s (%s)", exc.message, exc.hint)
        if now >= self._next_beat:
            self._next_beat = now + self.heartbeat_interval
            self._heartbeat()
        if self.notice is not None and self.handled is None and now >= self._next_notice:
            self._next_notice = now + self.notice_interval
            self._check_notice()

    def _heartbeat(self) -> None:
        try:
            view = self.client.post(f"/nodes/{self.node}/heartbeat")
            labels = view.get("spec", {}).get("labels", {})
            want = self.peer.url if self.peer is not None and self.peer.pid is not None else None
            if want and labels.get(PEER_MEMORY_LABEL) != want:
                self.client.request("PATCH", f"/nodes/{self.node}/labels", json={"labels": {PEER_MEMORY_LABEL: want}})
                self._published = want
                log.info("published peer-memory URL %s on node %s", want, self.node)
        except ModelplaneError as exc:
            log.warning("heartbeat for node %s failed: %s", self.node, exc.message)

    def _check_notice(self) -> None:
        assert self.notice is not None
        try:
            found = self.notice.poll()
        except AgentError as exc:
            log.warning("%s (%s)", exc.message, exc.hint)
            return
        if found is None:
            return
        SPOT_NOTICES.labels(found.provider).inc()
        message = f"{found.describe()}: draining node {self.node} (jobs checkpoint and move)"
        log.warning(message)
        try:
            self.client.post(f"/nodes/{self.node}/drain", json={"reason": "SpotInterruption", "message": message})
        except ModelplaneError as exc:
            log.error("could not drain node %s after the notice: %s; retrying", self.node, exc.message)
            self._next_notice = self.clock()  # try again next round
            return
        self.handled = found

    def run(self, stop: threading.Event) -> None:
        tick = min(self.heartbeat_interval, self.notice_interval if self.notice else self.heartbeat_interval, 1.0)
        while not stop.is_set():
            self.run_once()
            stop.wait(tick)

    def close(self) -> None:
        """Stop the peer-memory server and withdraw its URL, so no job is sent to a dead server."""
        if self.peer is None:
            return
        self.peer.stop()
        if self._published:
            try:
                labels = self.client.get(f"/nodes/{self.node}").get("spec", {}).get("labels", {})
                if labels.get(PEER_MEMORY_LABEL) == self._published:  # not another agent's since
                    self.client.request("PATCH", f"/nodes/{self.node}/labels",
                                        json={"labels": {PEER_MEMORY_LABEL: None}})
            except ModelplaneError as exc:
                log.warning("could not withdraw the peer-memory URL of node %s: %s", self.node, exc.message)
