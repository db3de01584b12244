"""FGD whose fragmentation looks ahead on CPU, with CPU-only tasks packed as ``fgd_cpu_pack`` does.

FGD (``scores.fgd``) counts a node's idle GPU share as usable by a task shape as soon as one task of
that shape still fits. On openb, much of what is left idle at 130% arrived is GPU that no task can
use any more because the node's CPU ran out first (about 40% of the idle GPUs in a multigpu50
replay with ``fgd_cpu_pack``, seed 42, the rest share remnants and memory). This scorer measures
fragmentation with ``fragmentation.cpu_aware_fragmentation``: a shape can feed only
``free CPU // its CPU`` copies' worth of the node's fitting devices, the rest counts as fragment.
Everything else is ``fgd_cpu_pack``: the same integer 0-100 score (whose ties and their fixed
order are part of why FGD works), devices chosen as FGD chooses them under this measure, and
CPU-only tasks' ties going to the node left with the least free GPU.

Measured (``benchmarks/fgd_openb.py --policies fgd_cpu_aware``, 130% arrived, mean of seeds 42-51
minus the published FGD): +0.20 to +0.79 points on 13 of the 17 lists (cpu050 +0.44, cpu100 +0.30,
where ``fgd_cpu_pack`` is 0.05 and 0.03 below; default +0.24; gpuspec +0.65 to +0.79) and
multigpu20 +0.05, but multigpu30 -0.23, multigpu40 -0.34, multigpu50 -0.18: on the lists where most
GPUs go to 2-8 GPU pods the look-ahead loses to FGD's own measure (applied to whole-GPU tasks only,
or to shares only, it was still 0.13 and 0.26 below on multigpu40). So it is not the default.

Why (replays of multigpu40, seeds 42-44): a node with more CPU per GPU strands nothing where the
common 96-CPU, 8-GPU node strands a GPU, so every task asking more than 12 CPUs per GPU scores
higher on the 39 128-CPU, 8-GPU nodes; from 30% arrived (when the 2-GPU, 104-CPU nodes are full)
to 50% they are all opened, though they are the only nodes that fit the 8-GPU pods asking 120 CPUs
(0.4% of pods, outside the 95% typical mix, so no measure sees them). Those pods then fail from 47%
arrived instead of 87%: 163 GPUs of them failed per seed against 67 with ``fgd_cpu_pack``, more
than the 80 GPUs the look-ahead saved on every other shape. ``fgd_cpu_excess`` avoids it.
"""

from __future__ import annotations

from modelplane.scheduler.scores.fgd import FGDScorer
from modelplane.scheduler.scores.fgd_cpu_pack import FGDCpuPackScorer
from modelplane.scheduler.scores.fragmentation import cpu_aware_fragmentation
from modelplane.scheduler.scoring import register_scorer


class FGDCpuAwareScorer(FGDCpuPackScorer):
    name = "fgd_cpu_aware"
    _fgd = FGDScorer(cpu_aware_fragmentation)


@register_scorer("fgd_cpu_aware")
def _factory() -> FGDCpuAwareScorer:
    return FGDCpuAwareScorer()
