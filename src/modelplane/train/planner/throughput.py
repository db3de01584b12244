"""Step time of a configuration: compute at a calibrated fraction of peak, pipeline bubble, and
communication from ring formulas (nccl-tests: all-reduce moves 2(n-1)/n of the buffer per device).

The calibration (``Calibration``) is the one empirical part: dense GEMM efficiency rises with the
size of the per-device matrices. Its defaults were fitted once against SC'21 Table 1 (see
``benchmarks/planner.py``); everything else is first-principles arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelplane.train.planner.shapes import Cluster, ParallelConfig, TransformerShape

BF16 = 2


@dataclass(frozen=True)
class Calibration:
    """Achievable fraction of peak for the transformer's GEMMs:
    ``peak_fraction x h / (h + hidden_half) x r / (r + rows_half)``, h the hidden size (the
    GEMMs' inner dimension), r = micro_batch x seq the rows of each GEMM.

    ``peak_fraction`` and ``hidden_half`` are fitted to SC'21 Table 1 (the benchmark refits them
    and reports leave-one-out errors); ``rows_half`` is an assumption (small micro-batches run
    smaller GEMMs) that Table 1 cannot pin down because it does not list micro-batch sizes.
    """

    peak_fraction: float = 0.65
    hidden_half: float = 800.0
    rows_half: float = 128.0
    dp_overlap: float = 0.0  # fraction of the gradient reduction hidden behind the backward pass

    def kernel_efficiency(self, shape: TransformerShape, cfg: ParallelConfig) -> float:
        h = shape.hidden
        rows = cfg.micro_batch * shape.seq
        return self.peak_fraction * h / (h + self.hidden_half) * rows / (rows + self.rows_half)


@dataclass(frozen=True)
class StepTime:
    compute: float
    bubble: float
    tensor_comm: float
    pipeline_comm: float
    data_comm: float

    @property
    def total(self) -> float:
        return self.compute + self.bubble + self.tensor_comm + self.pipeline_comm + self.data_comm


def ring_allreduce_time(nbytes: float, n: int, bandwidth: float) -> float:
    return 0.0 if n <= 1 else 2 * (n - 1) / n * nbytes / bandwidth


def _spans_nodes(group_size: int, stride: int, cluster: Cluster) -> bool:
    """Ranks are laid out tensor-fastest, then pipeline, then data (Megatron's order)."""
    return group_size > 1 and group_size * stride > cluster.gpus_per_node


def step_time(shape: TransformerShape, cfg: ParallelConfig, cluster: Cluster, cal: Calibration) -> StepTime:
    n = cfg.gpus
    m = cfg.micro_batches
    p, t, d, v = cfg.pipeline, cfg.tensor, cfg.data, cfg.interleave
    flops = shape.flops_per_iteration(cfg.global_batch, cfg.recompute)
    compute = flops / (n * cluster.device.peak_flops * cal.kernel_efficiency(shape, cfg))
    bubble = compute * (p - 1) / (v * m) if p > 1 else 0.0

    act_bytes = shape.seq * cfg.micro_batch * shape.hidden * BF16
    tp_bw = cluster.inter_node_bw if _spans_nodes(t, 1, cluster) else cluster.intra_node_bw
    allreduces_per_layer = {"none": 4, "selective": 4, "full": 6}[cfg.recompute]
    tensor_comm = (
        (m + p - 1) * (shape.layers / p) * allreduces_per_layer * ring_allreduce_time(act_bytes, t, tp_bw)
    )

    pp_bw = cluster.inter_node_bw if _spans_nodes(p, t, cluster) else cluster.intra_node_bw
    # scatter/gather (SC'21 sec. 4.1): each tensor-parallel rank sends 1/t of the activation over
    # its own inter-node link, then the stage all-gathers it over NVLink
    pp_bytes = act_bytes / t if pp_bw == cluster.inter_node_bw else act_bytes
    pipeline_comm = 2 * v * (m + p - 1) * pp_bytes / pp_bw if p > 1 else 0.0

    params_per_device = (shape.layers / p * shape.layer_parameters + shape.embedding_parameters) / t
    dp_bw = cluster.inter_node_bw if _spans_nodes(d, t * p, cluster) else cluster.intra_node_bw
    data_comm = (1 - cal.dp_overlap) * ring_allreduce_time(params_per_device * BF16, d, dp_bw)
    return StepTime(compute, bubble, tensor_comm, pipeline_comm, data_comm)
