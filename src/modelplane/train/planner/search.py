"""Validate a configuration, predict its memory and speed, and rank every valid one.

Pure functions over plain data: the CLI (`modelplane plan`) and the job controller call them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from modelplane.train.errors import InvalidParallelConfig
from modelplane.train.planner.memory import MemoryEstimate, estimate_memory
from modelplane.train.planner.shapes import RECOMPUTE_MODES, Cluster, ParallelConfig, TransformerShape
from modelplane.train.planner.throughput import Calibration, StepTime, step_time

DEFAULT_USABLE_MEMORY = 0.90  # leave room for the CUDA context, NCCL buffers and fragmentation


@dataclass(frozen=True)
class Prediction:
    config: ParallelConfig
    memory: MemoryEstimate
    time: StepTime
    flops_per_gpu: float  # FLOPs executed (recomputation included, as SC'21 reports) per second per device
    mfu: float  # model FLOPs without recomputation / peak
    tokens_per_s: float


def problems(shape: TransformerShape, cfg: ParallelConfig, cluster: Cluster) -> list[str]:
    """Why a configuration cannot run; empty when it can (memory is checked separately)."""
    out = []
    if min(cfg.data, cfg.tensor, cfg.pipeline, cfg.micro_batch, cfg.global_batch, cfg.interleave) < 1:
        out.append("all degrees, batch sizes and the interleave factor must be >= 1")
        return out
    if cfg.gpus != cluster.gpus:
        out.append(f"data x tensor x pipeline = {cfg.gpus}, but {cluster.gpus} devices are placed")
    if shape.heads % cfg.tensor:
        out.append(f"tensor parallel {cfg.tensor} does not divide the {shape.heads} attention heads")
    if cfg.tensor > cluster.gpus_per_node:
        out.append(
            f"tensor parallel {cfg.tensor} exceeds the {cluster.gpus_per_node} devices of a node (NVLink domain)"
        )
    if shape.layers % (cfg.pipeline * cfg.interleave):
        out.append(
            f"pipeline {cfg.pipeline} x interleave {cfg.interleave} does not divide the {shape.layers} layers"
        )
    if cfg.global_batch % (cfg.data * cfg.micro_batch):
        out.append(
            f"global batch {cfg.global_batch} is not a multiple of data {cfg.data} x micro-batch {cfg.micro_batch}"
        )
    elif cfg.interleave > 1 and cfg.micro_batches % cfg.pipeline:
        out.append(
            "the interleaved schedule needs the micro-batch count to be a multiple of the pipeline degree"
        )
    if cfg.zero_stage not in (0, 1, 2, 3):
        out.append(f"ZeRO stage {cfg.zero_stage} does not exist (0-3)")
    if cfg.zero_stage >= 2 and cfg.pipeline > 1:
        out.append("ZeRO-2/3 shard gradients, which pipeline parallelism accumulates across micro-batches")
    if cfg.sequence_parallel and cfg.tensor == 1:
        out.append("sequence parallelism needs tensor parallelism > 1")
    return out


def predict(
    shape: TransformerShape,
    cfg: ParallelConfig,
    cluster: Cluster,
    cal: Calibration | None = None,
    *,
    usable_memory: float = DEFAULT_USABLE_MEMORY,
    check_memory: bool = True,
) -> Prediction:
    """Predict one configuration; raises :class:`InvalidParallelConfig` with every reason it is
    rejected (including memory, unless ``check_memory`` is False)."""
    cal = cal or Calibration()
    reasons = problems(shape, cfg, cluster)
    if reasons:
        raise InvalidParallelConfig(
            f"{cfg.describe()} is invalid: " + "; ".join(reasons),
            field="parallelism",
            hint="see `modelplane plan` for valid ones",
        )
    mem = estimate_memory(shape, cfg)
    budget = cluster.device.memory_bytes * usable_memory
    if check_memory and mem.total > budget:
        raise InvalidParallelConfig(
            f"{cfg.describe()} needs {mem.total / 1e9:.1f} GB per device, {cluster.device.name} offers "
            f"{budget / 1e9:.1f} GB usable (states {mem.model_states / 1e9:.1f}, activations {mem.activations / 1e9:.1f})",
            field="parallelism",
            hint="raise tensor/pipeline parallelism, a ZeRO stage or recomputation, or lower the micro-batch",
        )
    t = step_time(shape, cfg, cluster, cal)
    executed = shape.flops_per_iteration(cfg.global_batch, cfg.recompute)
    model_flops = shape.flops_per_iteration(cfg.global_batch, "none")
    return Prediction(
        config=cfg,
        memory=mem,
        time=t,
        flops_per_gpu=executed / (t.total * cfg.gpus),
        mfu=model_flops / (t.total * cfg.gpus * cluster.device.peak_flops),
        tokens_per_s=cfg.global_batch * shape.seq / t.total,
    )


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def candidates(
    shape: TransformerShape,
    cluster: Cluster,
    global_batch: int,
    *,
    micro_batches: Iterable[int] = (1, 2, 4, 8, 16),
    zero_stages: Iterable[int] = (1,),
    recompute: Iterable[str] = RECOMPUTE_MODES,
    interleave: Iterable[int] = (1, 2, 4),
    sequence_parallel: Iterable[bool] = (False, True),
) -> Iterable[ParallelConfig]:
    for t in _divisors(min(cluster.gpus, cluster.gpus_per_node)):
        if cluster.gpus % t:
            continue
        for p in _divisors(cluster.gpus // t):
            d = cluster.gpus // (t * p)
            for b in micro_batches:
                for z in zero_stages:
                    for rc in recompute:
                        for v in interleave if p > 1 else (1,):
                            for sp in sequence_parallel if t > 1 else (False,):
                                yield ParallelConfig(d, t, p, b, global_batch, z, rc, sp, v)  # type: ignore[arg-type]


def recommend(
    shape: TransformerShape,
    cluster: Cluster,
    global_batch: int,
    cal: Calibration | None = None,
    *,
    top: int = 5,
    usable_memory: float = DEFAULT_USABLE_MEMORY,
    space: Iterable[ParallelConfig] | None = None,
) -> list[Prediction]:
    """Every valid configuration that fits, highest training throughput (tokens/s) first; ties go to
    the one using less memory. Ranking by tokens/s, not FLOP/s, so recomputation is a cost."""
    cal = cal or Calibration()
    budget = cluster.device.memory_bytes * usable_memory
    ranked = []
    for cfg in space if space is not None else candidates(shape, cluster, global_batch):
        if problems(shape, cfg, cluster):
            continue
        if estimate_memory(shape, cfg).total > budget:
            continue
        ranked.append(predict(shape, cfg, cluster, cal, usable_memory=usable_memory, check_memory=False))
    if not ranked:
        raise InvalidParallelConfig(
            f"no configuration of {cluster.gpus} x {cluster.device.name} fits a {shape.parameters / 1e9:.1f}B-parameter model",
            field="gpus",
            hint="add devices, use devices with more memory, or allow ZeRO-3",
        )
    ranked.sort(key=lambda pr: (-pr.tokens_per_s, pr.memory.total))
    return ranked[:top]


def best_for_layout(
    shape: TransformerShape,
    cluster: Cluster,
    cfg: ParallelConfig,
    cal: Calibration | None = None,
    *,
    micro_batches: Iterable[int] = (1, 2, 4, 8, 16),
    interleave: Iterable[int] = (1, 2, 4),
) -> Prediction:
    """The fastest micro-batch and interleave for a fixed dp x tp x pp layout, recomputation and
    sequence parallelism: how we score a published configuration whose other knobs are unknown."""
    space = [
        c
        for c in candidates(
            shape,
            cluster,
            cfg.global_batch,
            micro_batches=micro_batches,
            zero_stages=(cfg.zero_stage,),
            recompute=(cfg.recompute,),
            interleave=interleave,
            sequence_parallel=(cfg.sequence_parallel,),
        )
        if (c.data, c.tensor, c.pipeline) == (cfg.data, cfg.tensor, cfg.pipeline)
    ]
    return recommend(shape, cluster, cfg.global_batch, cal, top=1, space=space)[0]


def with_degrees(cfg: ParallelConfig, **changes: int) -> ParallelConfig:
    return replace(cfg, **changes)  # type: ignore[arg-type]
