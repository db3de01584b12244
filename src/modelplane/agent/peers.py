"""Which node's memory keeps which rank's checkpoint copy: pure functions, shared by the job
controller (which builds a job's URL list) and the agents (which publish one URL per node).

A node publishes its peer-memory Redis under the label ``modelplane.io/peer-memory`` without any
password (labels are readable by every member); the job controller adds the per-cluster secret
when it hands the URLs to a job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

PEER_MEMORY_LABEL = "modelplane.io/peer-memory"


def with_password(url: str, password: str) -> str:
    """``redis://host:port/0`` -> ``redis://:<password>@host:port/0`` (the password URL-quoted)."""
    if not password:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f":{quote(password, safe='')}@{host}", parts.path, parts.query, parts.fragment))


def peer_urls(rank_nodes: Sequence[str], node_urls: Mapping[str, str], password: str = "") -> list[str]:
    """The ``MODELPLANE_PEER_MEMORY_URLS`` list for a job whose rank r runs on ``rank_nodes[r]``.

    The training runtime sends rank r's copy to ``urls[(r + 1) % n]``. The list is built so that
    this is the Redis of the next node of the placement (in rank order, wrapping around) that
    publishes one: a copy never lives on its own rank's node while the job spans another node with
    a peer-memory server, so losing one node never loses both a rank and its copy. A single-node
    job keeps its copy on its own node (it still survives a process crash). Empty when no node of
    the placement publishes a URL (the tier is off for that job).
    """
    n = len(rank_nodes)
    order = list(dict.fromkeys(rank_nodes))  # distinct nodes, in rank order
    serving = [node for node in order if node_urls.get(node)]
    if n == 0 or not serving:
        return []
    peer_of: dict[str, str] = {}
    for i, node in enumerate(order):
        after = [order[(i + k) % len(order)] for k in range(1, len(order))]
        peer_of[node] = next((m for m in after if node_urls.get(m)), node if node_urls.get(node) else serving[0])
    urls = [""] * n
    for r, node in enumerate(rank_nodes):
        urls[(r + 1) % n] = with_password(node_urls[peer_of[node]], password)
    return urls
