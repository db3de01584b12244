"""Training runtime used inside jobs: checkpoints, preemption, heartbeats, fault-tolerant
accumulation, hierarchical collectives, and the (torch-free) hybrid-parallelism planner.

Importing this package does not import torch; the pieces that need it import it when used.
"""

from __future__ import annotations

from modelplane.train.context import DistributedInfo, TrainContext, init
from modelplane.train.heartbeat import CallbackHeartbeat, FileHeartbeat, Heartbeat
from modelplane.train.policy import SavePolicy, young_interval
from modelplane.train.preempt import PreemptionWatcher
from modelplane.train.privacy_hooks import PrivacyBudgetExhausted, PrivateTraining, make_private

__all__ = [
    "CallbackHeartbeat",
    "DistributedInfo",
    "FileHeartbeat",
    "Heartbeat",
    "PreemptionWatcher",
    "PrivacyBudgetExhausted",
    "PrivateTraining",
    "SavePolicy",
    "TrainContext",
    "init",
    "make_private",
    "young_interval",
]
