"""FGD with CPU-only tasks packed where the GPUs are already taken (a candidate default score).

A task without GPUs changes a node's GPU fragmentation only when it takes so much CPU that a
typical GPU task no longer fits there; otherwise FGD scores it 50 on almost every node and the tie
goes to the first node of a fixed order, i.e. to an arbitrary node, often one whose GPUs are still
idle. That CPU is then missing when a GPU task comes for those GPUs. This scorer keeps FGD's
integer score and, for CPU-only tasks only, breaks its ties towards the node left with the least
free GPU share (``fgd_plus.packing_tie``): CPU is spent first where no GPU task can use it any
more (nodes whose GPUs are allocated, nodes without GPUs). GPU tasks are scored exactly as FGD
scores them, ties included.

Why only CPU-only tasks (openb replays, seeds 42-46, 130% arrived, against FGD's own ties):
the same tie-break on GPU tasks (``fgd_plus``) loses up to 3 points on gpushare100 when applied to
shares and about 2.5 on cpu200/cpu250 when applied to whole devices, because it moves GPU tasks
off the fixed order that packs equal-score nodes one after another. Other tie-breaks for GPU tasks
lost too, on six lists: unrounded FGD delta -0.6 points on average, most GPU left -0.2, most CPU
left -1.0, least fragmentation after placement -0.3; preferring nodes already in use was within
noise (+0.03). Restricted to CPU-only tasks, the tie-break gains +0.4 to +0.6 over FGD on the
gpuspec lists, where pods' ``gpu_spec`` lists pin GPUs to few nodes that spread CPU-only tasks
would strand, up to +0.35 elsewhere (cpu250, multigpu20), and loses nowhere beyond seed noise.

Seeds 42-51 (benchmarks/fgd_openb.py): +0.00 to +0.60 points over our FGD on every list but
cpu100 (-0.03); against the published FGD, +0.33 to +0.48 on the gpuspec lists, at or above it on
13 of 17 lists, 0.01-0.05 below on cpu050, cpu100, multigpu40 and multigpu50, where CPU-only tasks
are few or do not decide which multi-GPU pods fail. It is not the default for that reason.
"""

from __future__ import annotations

from modelplane.core.workload import TaskRequest
from modelplane.scheduler.scores.fgd_plus import FGDPlusScorer
from modelplane.scheduler.scoring import register_scorer


class FGDCpuPackScorer(FGDPlusScorer):
    name = "fgd_cpu_pack"

    def tie_broken(self, request: TaskRequest) -> bool:
        return not request.wants_gpu  # GPU tasks keep FGD's own ties (see above)


@register_scorer("fgd_cpu_pack")
def _factory() -> FGDCpuPackScorer:
    return FGDCpuPackScorer()
