"""The one object a training script talks to (as Determined's ``core.init()``): rank info,
checkpoints, preemption, heartbeats. The same script runs under the platform (which sets the
environment) and without it (a single process with local checkpoints)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from modelplane.core.errors import InvalidSpec
from modelplane.train.heartbeat import Heartbeat, heartbeat_from_env
from modelplane.train.metrics import METRICS_PORT_ENV, AccumulationCollector
from modelplane.train.policy import SavePolicy
from modelplane.train.preempt import PreemptionWatcher

CHECKPOINT_URL_ENV = "MODELPLANE_CHECKPOINT_URL"
DEFAULT_CHECKPOINT_URL = "./modelplane-checkpoints"


@dataclass(frozen=True)
class DistributedInfo:
    """Where this process sits in the job, read from the torchrun-style environment."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def node_rank(self) -> int:
        return self.rank // self.local_world_size

    @property
    def num_nodes(self) -> int:
        return max(1, self.world_size // self.local_world_size)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DistributedInfo:
        def num(name: str, default: int) -> int:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                return int(raw)
            except ValueError:
                raise InvalidSpec(
                    f"{name}={raw!r} is not an integer", field=name, hint="unset it or give a number"
                ) from None

        world = num("WORLD_SIZE", 1)
        rank = num("RANK", 0)
        if world < 1 or not 0 <= rank < world:
            raise InvalidSpec(
                f"RANK={rank} WORLD_SIZE={world} is not a valid position",
                field="RANK",
                hint="RANK must be in [0, WORLD_SIZE)",
            )
        local_world = num("LOCAL_WORLD_SIZE", world)
        return cls(
            rank=rank,
            world_size=world,
            local_rank=num("LOCAL_RANK", rank % max(1, local_world)),
            local_world_size=local_world,
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=num("MASTER_PORT", 29500),
        )


class TrainContext:
    """Returned by :func:`init`. ``checkpoint`` is a CheckpointManager; call ``track`` on it."""

    def __init__(
        self,
        distributed: DistributedInfo,
        checkpoint: Any,
        preempt: PreemptionWatcher,
        heartbeat: Heartbeat,
        owns_process_group: bool,
    ) -> None:
        self.distributed = distributed
        self.checkpoint = checkpoint
        self.preempt = preempt
        self.heartbeat = heartbeat
        self._owns_pg = owns_process_group
        # Accumulators register their counters here (``ctx.metrics.watch(acc.stats)``); they are served
        # to Prometheus when MODELPLANE_METRICS_PORT is set.
        self.metrics = AccumulationCollector(distributed.rank)
        self.metrics_server: Any = None

    def close(self) -> None:
        """Commit the in-flight checkpoint, stop heartbeats, leave the process group."""
        try:
            self.checkpoint.close()
        finally:
            if self.metrics_server is not None:
                self.metrics_server.shutdown()
            self.heartbeat.stop()
            self.preempt.uninstall()
            if self._owns_pg:
                import torch.distributed as dist

                if dist.is_initialized():
                    dist.destroy_process_group()

    def __enter__(self) -> TrainContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def init(
    checkpoint_url: str | None = None,
    *,
    policy: SavePolicy | None = None,
    keep_last: int = 3,
    asynchronous: bool = True,
    seed: int = 0,
    heartbeat: Heartbeat | None = None,
    preempt: PreemptionWatcher | None = None,
    backend: str = "gloo",
    timeout_s: float = 600.0,
    env: Mapping[str, str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> TrainContext:
    """Set up the training runtime from the environment the platform provides.

    With WORLD_SIZE > 1 the default process group is initialised (``env://`` rendezvous) unless
    the script did it already. The checkpoint URL comes from the argument, then
    ``MODELPLANE_CHECKPOINT_URL``, then a local folder.
    """
    from modelplane.train.checkpoint import CheckpointManager
    from modelplane.train.errors import require_torch

    require_torch()
    import torch.distributed as dist

    env = os.environ if env is None else env
    info = DistributedInfo.from_env(env)
    owns = False
    if info.world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://{info.master_addr}:{info.master_port}",
            rank=info.rank,
            world_size=info.world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        owns = True
    url = checkpoint_url or env.get(CHECKPOINT_URL_ENV) or DEFAULT_CHECKPOINT_URL
    watcher = preempt if preempt is not None else PreemptionWatcher()
    manager = CheckpointManager(
        url,
        keep_last=keep_last,
        policy=policy or SavePolicy(),
        asynchronous=asynchronous,
        preempt=watcher,
        seed=seed,
        storage_options=storage_options,
        group_timeout_s=timeout_s,
    )
    hb = heartbeat if heartbeat is not None else heartbeat_from_env(info.rank, dict(env))
    ctx = TrainContext(info, manager, watcher, hb, owns)
    port = env.get(METRICS_PORT_ENV)
    if port:
        from modelplane.train.metrics import serve_metrics

        ctx.metrics_server = serve_metrics(ctx.metrics, int(port) + info.local_rank)
    return ctx
