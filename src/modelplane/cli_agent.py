"""``modelplane node-agent``: the per-node process of a real pool (one per machine).

It heartbeats its node through the API, runs the node's peer-memory redis-server, and drains the
node when the cloud announces a spot interruption. Under ``modelplane up`` with the local backend
the control plane does the first two for every node itself; run this on each machine otherwise.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console

from modelplane.core.errors import ModelplaneError

err = Console(stderr=True, width=None if sys.stderr.isatty() else 250)


def _route_address(api_url: str) -> str:
    """The address this host uses to reach the API: its address on the cluster network."""
    parts = urlsplit(api_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        family = socket.getaddrinfo(host, port, proto=socket.IPPROTO_UDP)[0]
        with socket.socket(family[0], socket.SOCK_DGRAM) as s:
            s.connect(family[4])  # no packet is sent: this only asks the kernel for the route
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


def node_agent(
    node: Annotated[str, typer.Option("--node", help="this machine's node name, as registered in the pool")],
    api: Annotated[str | None, typer.Option("--api", help="API server URL (default: MODELPLANE_API_URL)")] = None,
    peer_memory: Annotated[bool, typer.Option("--peer-memory/--no-peer-memory",
                                              help="run this node's peer-memory checkpoint Redis")] = True,
    address: Annotated[str | None, typer.Option(help="address the Redis binds and publishes (default: the "
                                                "one this host uses to reach the API)")] = None,
    peer_memory_port: Annotated[int, typer.Option(help="Redis port; 0 picks a free one")] = 0,
    maxmemory: Annotated[str | None, typer.Option(help="Redis memory bound (default: the "
                                                  "peer_memory_maxmemory setting)")] = None,
    spot_notice: Annotated[str, typer.Option(help="interruption notices to watch: aws, gcp or none")] = "none",
    metadata_url: Annotated[str | None, typer.Option(help="metadata service base URL (default: the "
                                                     "cloud's own)")] = None,
    heartbeat_interval: Annotated[float, typer.Option(help="seconds between heartbeats")] = 5.0,
    notice_interval: Annotated[float, typer.Option(help="seconds between metadata polls")] = 5.0,
    state_dir: Annotated[Path | None, typer.Option(help="where the Redis config and log go "
                                                   "(default: <home>/agent/<node>)")] = None,
    metrics_port: Annotated[int, typer.Option(help="serve Prometheus /metrics on this port (0: off)")] = 0,
) -> None:
    """Run this node's agent until SIGTERM or Ctrl-C."""
    from modelplane.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        overrides: dict[str, Any] = {"api_url": api} if api else {}
        settings = Settings(**overrides)
        agent = _build(settings, node, peer_memory, address, peer_memory_port, maxmemory, spot_notice,
                       metadata_url, heartbeat_interval, notice_interval, state_dir)
        agent.check_node()
        if metrics_port:
            from prometheus_client import start_http_server

            from modelplane.obs.metrics import REGISTRY

            start_http_server(metrics_port, registry=REGISTRY)
        if agent.peer is not None:
            agent.peer.start()
    except ModelplaneError as exc:
        err.print(f"[red]error:[/red] {exc.message}" + (f" [dim]({exc.hint})[/dim]" if exc.hint else ""),
                  highlight=False)
        raise typer.Exit(2) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    peer = f", peer memory at {agent.peer.url}" if agent.peer else ""
    err.print(f"node agent for {node} against {settings.resolved_api_url}{peer}; "
              f"spot notices: {spot_notice}", highlight=False)
    try:
        agent.run(stop)
    finally:
        agent.close()


def _build(settings: Any, node: str, peer_memory: bool, address: str | None, port: int, maxmemory: str | None,
           spot_notice: str, metadata_url: str | None, heartbeat_interval: float, notice_interval: float,
           state_dir: Path | None) -> Any:
    from modelplane.agent.node_agent import NodeAgent
    from modelplane.agent.redis_tier import PeerMemoryServer
    from modelplane.agent.spot import notice_source
    from modelplane.client import Client

    notice = notice_source(spot_notice, metadata_url or "")
    client = Client.from_settings(settings)
    peer = None
    if peer_memory:
        peer = PeerMemoryServer(state_dir or settings.home / "agent" / node,
                                bind=address or _route_address(settings.resolved_api_url),
                                port=port, maxmemory=maxmemory or settings.peer_memory_maxmemory,
                                password=settings.peer_memory_password)
    return NodeAgent(client, node, peer=peer, notice=notice, heartbeat_interval_s=heartbeat_interval,
                     notice_interval_s=notice_interval)


def register(app: typer.Typer) -> None:
    app.command("node-agent")(node_agent)
