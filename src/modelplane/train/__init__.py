"""Training runtime used inside jobs: checkpoints, preemption, heartbeats, fault-tolerant
accumulation, hierarchical collectives, and the (torch-free) hybrid-parallelism planner.

Importing this package does not import torch; the pieces that need it import it when used.
"""

from __future__ import annotations

from modelplane.train.context import DistributedInfo, TrainContext, init
from modelplane.train.heartbeat import CallbackHeartbeat, FileHeartbeat, Heartbeat
from modelplane.train.policy import SavePolicy, young_interval
from modelplane.train.preempt import PreemptionWatcher

__all__ = [
    "CallbackHeartbeat",
    "DistributedInfo",
    "FileHeartbeat",
    "Heartbeat",
    "PreemptionWatcher",
    "SavePolicy",
    "TrainContext",
    "init",
    "young_interval",
]
