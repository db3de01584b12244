"""FGD with a CPU look-ahead that does not pull tasks to the CPU-richest whole nodes (candidate).

``fgd_cpu_aware`` counts GPU a node's free CPU cannot feed as fragment. Replays of openb
multigpu40 (seeds 42-44) showed why it loses on the multi-GPU lists: it sends every task asking
more than 12 CPUs per GPU (the common 96-CPU, 8-GPU node's ratio) to the 39 128-CPU, 8-GPU nodes,
where it strands nothing, and between 30% and 50% arrived all of them are opened, although they
are the only nodes that fit the 8-GPU pods asking 120 CPUs (0.4% of pods, outside the 95% typical
mix, so no measure sees them). Those pods then fail from 47% arrived instead of 87%: 163 GPUs of
them failed per seed against 67 with ``fgd_cpu_pack``, more than the 80 GPUs the look-ahead saved on
every other shape.

Three changes against ``fgd_cpu_aware``:

- the measure is ``fragmentation.cpu_excess_fragmentation``: stranding counts only beyond what the
  node's build strands while idle, so a node poor in CPU per GPU is not penalised for being so;
- for a GPU task, a node with every device free and at least as many devices as the mix's largest
  task is judged by FGD's own measure: which whole node to open is left to FGD (to which such nodes
  mostly tie, so the fixed order spreads the choice over node types), not to the look-ahead, which
  would always open the CPU-richest one;
- CPU-only tasks are judged by the excess measure everywhere (with the FGD measure on idle whole
  nodes they went to those nodes: cpu250 -0.16 instead of +0.28), and their ties go to the node
  left with the least free GPU, as in ``fgd_cpu_pack``.

Measured with the command below (130% arrived, mean of seeds 42-51 minus the published FGD):
cpu050 +0.52, cpu100 +0.37, cpu200 +0.72, cpu250 +0.28, default +0.33, gpushare100 +0.32,
gpushare40 +0.33, gpushare60 +0.24, gpushare80 +0.25, gpuspec10 +0.68, gpuspec20 +0.59, gpuspec25
+0.58, gpuspec33 +0.73, multigpu20 +0.45, multigpu30 +0.04, multigpu40 -0.02, multigpu50 -0.03
(our FGD in the same run: -0.16 to +0.03, below on 11 lists). Seeds 0-9, not used to choose it:
+0.22 to +0.73 on 14 lists, multigpu30 +0.04, multigpu40 and multigpu50 -0.03 each. So it beats
``fgd_cpu_aware`` on multigpu30/40/50 by 0.15-0.32 but stays about where ``fgd_cpu_pack`` and our
FGD are on multigpu40/50 (on those lists it places almost as they do), just below the published
FGD: it is not the default.

    PYTHONPATH=src .venv/bin/python benchmarks/fgd_openb.py --traces all --seeds 42-51 \\
        --policies fgd,fgd_cpu_excess
"""

from __future__ import annotations

from collections.abc import Sequence

from modelplane.core.placement import NodeFree
from modelplane.core.workload import TaskRequest
from modelplane.scheduler.scores._common import MILLI
from modelplane.scheduler.scores.fgd import FGDScorer, Mix, options_by
from modelplane.scheduler.scores.fgd_cpu_pack import FGDCpuPackScorer
from modelplane.scheduler.scores.fragmentation import excess_fragmentation, node_fragmentation
from modelplane.scheduler.scoring import register_scorer


def opens_whole_node(free: NodeFree, mix: Mix) -> bool:
    """Whether the node is idle on every device and big enough for the mix's largest task."""
    largest = max((shape.gpu_count for shape, _ in mix), default=0)
    n = free.node.gpu_count
    return n > 0 and n >= largest and len(free.device_free) == n and all(f == MILLI for f in free.device_free)


class ExcessFGD(FGDScorer):
    """FGD's options over the excess measure (``reads_memory``: with memory, as ``fgd_fit_excess``);
    a GPU task that would open an idle whole node is judged by FGD's own measure."""

    def __init__(self, reads_memory: bool = False) -> None:
        super().__init__(node_fragmentation)
        self.reads_memory = reads_memory

    def options(self, free: NodeFree, request: TaskRequest, mix: Mix) -> list[tuple[float, tuple[int, ...]]]:
        if request.wants_gpu and opens_whole_node(free, mix):
            return super().options(free, request, mix)
        node = free.node
        mem_capacity = node.memory_mib if self.reads_memory else None

        def measure(cpu: int, mem: int, devices: Sequence[int]) -> float:
            return excess_fragmentation(
                cpu,
                mem if self.reads_memory else None,
                devices,
                node.gpu_model,
                mix,
                cpu_capacity=node.cpu_milli,
                gpu_count=node.gpu_count,
                mem_capacity=mem_capacity,
            )

        before = measure(free.cpu_milli, free.memory_mib, free.device_free)
        cpu_after, mem_after = free.cpu_milli - request.cpu_milli, free.memory_mib - request.memory_mib
        return options_by(free.device_free, request, before, lambda left: measure(cpu_after, mem_after, left))


class FGDCpuExcessScorer(FGDCpuPackScorer):
    name = "fgd_cpu_excess"
    _fgd = ExcessFGD()


@register_scorer("fgd_cpu_excess")
def _factory() -> FGDCpuExcessScorer:
    return FGDCpuExcessScorer()
