"""Hierarchical AllReduce on torch.distributed process groups (as Horovod's): reduce-scatter among
the ranks of a node (fast links), all-reduce of each 1/g shard across nodes (slow links, each of
the g ranks of a node drives its own share), all-gather inside the node.

Why: a flat ring sends 2(n-1)/n x S over the slowest link on the ring; the hierarchical version
sends only 2(N-1)/N x S/g across nodes per rank, N nodes of g ranks, in parallel over the g
ranks' links. Results equal a flat all-reduce up to floating-point summation order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from modelplane.core.errors import InvalidSpec


@dataclass(frozen=True)
class NodeLayout:
    """Which node each global rank runs on (index = rank)."""

    node_of_rank: tuple[int, ...]

    @classmethod
    def contiguous(cls, world_size: int, ranks_per_node: int) -> NodeLayout:
        if ranks_per_node <= 0 or world_size % ranks_per_node:
            raise InvalidSpec(
                f"{world_size} ranks cannot be split into nodes of {ranks_per_node}",
                field="ranks_per_node",
                hint="LOCAL_WORLD_SIZE must divide WORLD_SIZE",
            )
        return cls(tuple(r // ranks_per_node for r in range(world_size)))

    @property
    def nodes(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for rank, node in enumerate(self.node_of_rank):
            out.setdefault(node, []).append(rank)
        return out

    @property
    def ranks_per_node(self) -> int:
        sizes = {len(r) for r in self.nodes.values()}
        if len(sizes) != 1:
            raise InvalidSpec(
                f"nodes hold different numbers of ranks ({sorted(sizes)})",
                field="placement",
                hint="hierarchical all-reduce needs the same number of ranks on every node",
            )
        return sizes.pop()

    def choose(self) -> str:
        """'hierarchical' when there are several nodes with several ranks each, else 'flat'."""
        return "hierarchical" if len(self.nodes) > 1 and self.ranks_per_node > 1 else "flat"


class HierarchicalAllReduce:
    """Creates its intra- and inter-node groups at construction (collective: every rank calls it)."""

    def __init__(self, layout: NodeLayout, *, backend: str | None = None) -> None:
        import torch.distributed as dist

        if len(layout.node_of_rank) != dist.get_world_size():
            raise InvalidSpec(
                f"layout covers {len(layout.node_of_rank)} ranks, the job has {dist.get_world_size()}",
                field="layout",
            )
        self.layout = layout
        self.rank = dist.get_rank()
        self.g = layout.ranks_per_node
        nodes = layout.nodes
        self.intra: Any = None
        self.inter: Any = None
        for node in sorted(nodes):
            group = dist.new_group(nodes[node], backend=backend)
            if self.rank in nodes[node]:
                self.intra = group
        for i in range(self.g):
            members = [nodes[node][i] for node in sorted(nodes)]
            group = dist.new_group(members, backend=backend)
            if self.rank in members:
                self.inter = group

    def all_reduce(self, tensor: Any, *, average: bool = False) -> Any:
        """Sum (or mean) ``tensor`` over all ranks, in place; returns it."""
        import torch
        import torch.distributed as dist

        n = tensor.numel()
        pad = (-n) % self.g
        if pad or not tensor.is_contiguous():  # work on a padded copy
            buf = torch.cat([tensor.reshape(-1), tensor.new_zeros(pad)])
        else:  # in place: the input is consumed by the reduce-scatter, then gathered back into it
            buf = tensor.view(-1)
        shard = buf.new_empty(buf.numel() // self.g)
        dist.reduce_scatter_tensor(shard, buf, group=self.intra)
        dist.all_reduce(shard, group=self.inter)
        if average:
            shard /= dist.get_world_size()
        dist.all_gather_into_tensor(buf, shard, group=self.intra)
        if buf.data_ptr() != tensor.data_ptr():
            tensor.copy_(buf[:n].view_as(tensor))
        return tensor


def make_all_reduce(layout: NodeLayout, *, backend: str | None = None) -> Any:
    """The all-reduce the topology calls for: a callable ``f(tensor, average=False)``."""
    if layout.choose() == "hierarchical":
        return HierarchicalAllReduce(layout, backend=backend).all_reduce

    def flat(tensor: Any, *, average: bool = False) -> Any:
        import torch.distributed as dist

        dist.all_reduce(tensor)
        if average:
            tensor /= dist.get_world_size()
        return tensor

    return flat


def nccl_settings(
    *,
    ib_hcas: Sequence[str] = (),
    socket_ifname: str | None = None,
    roce: bool = False,
    traffic_class: int = 106,
    gid_index: int = 3,
    algorithm: str | None = None,
) -> dict[str, str]:
    """Environment for NCCL on a placement's network.

    - ``NCCL_IB_HCA``: the RDMA devices to use (``mlx5_0,mlx5_1``); none -> ``NCCL_IB_DISABLE=1``
      (TCP sockets only).
    - ``NCCL_SOCKET_IFNAME``: the interface for bootstrap and socket transport.
    - RoCE v2: ``NCCL_IB_GID_INDEX`` selects the RoCE v2 GID (3 on most Mellanox setups) and
      ``NCCL_IB_TC`` the traffic class; 106 = DSCP 26 << 2 | ECN-capable, the lossless class that
      PFC and DCQCN are configured for on the switches.
    - ``NCCL_ALGO``: force Ring or Tree (default: NCCL's own tuning).
    """
    env: dict[str, str] = {}
    if ib_hcas:
        env["NCCL_IB_HCA"] = ",".join(ib_hcas)
        if roce:
            env["NCCL_IB_GID_INDEX"] = str(gid_index)
            env["NCCL_IB_TC"] = str(traffic_class)
    else:
        env["NCCL_IB_DISABLE"] = "1"
    if socket_ifname:
        env["NCCL_SOCKET_IFNAME"] = socket_ifname
        env["GLOO_SOCKET_IFNAME"] = socket_ifname
    if algorithm:
        if algorithm not in ("Ring", "Tree", "CollnetDirect", "CollnetChain", "NVLS", "NVLSTree", "PAT"):
            raise InvalidSpec(f"unknown NCCL algorithm {algorithm!r}", field="algorithm", hint="Ring or Tree")
        env["NCCL_ALGO"] = algorithm
    return env
