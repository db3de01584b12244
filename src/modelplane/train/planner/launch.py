"""Launch settings for a chosen configuration: torchrun arguments and environment, Megatron-LM
arguments, and a DeepSpeed config. Pure: returns data, the backend decides how to run it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelplane.train.planner.shapes import Cluster, ParallelConfig, TransformerShape


@dataclass(frozen=True)
class LaunchSettings:
    torchrun: list[str]
    env: dict[str, str]
    megatron: list[str]
    deepspeed: dict[str, Any] = field(default_factory=dict)


def launch_settings(
    shape: TransformerShape,
    cfg: ParallelConfig,
    cluster: Cluster,
    *,
    rdzv_endpoint: str = "$MASTER_ADDR:29500",
    job_id: str = "modelplane",
) -> LaunchSettings:
    nodes = max(1, cfg.gpus // cluster.gpus_per_node)
    per_node = min(cfg.gpus, cluster.gpus_per_node)
    torchrun = [
        f"--nnodes={nodes}",
        f"--nproc-per-node={per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={rdzv_endpoint}",
        f"--rdzv-id={job_id}",
        "--max-restarts=0",  # the platform relaunches with a fresh rendezvous; torchrun's own restarts hit stale peers
    ]
    megatron = [
        f"--tensor-model-parallel-size={cfg.tensor}",
        f"--pipeline-model-parallel-size={cfg.pipeline}",
        f"--micro-batch-size={cfg.micro_batch}",
        f"--global-batch-size={cfg.global_batch}",
        f"--num-layers={shape.layers}",
        f"--hidden-size={shape.hidden}",
        f"--num-attention-heads={shape.heads}",
        f"--seq-length={shape.seq}",
        f"--max-position-embeddings={shape.seq}",
        "--bf16",
    ]
    if cfg.interleave > 1:
        megatron.append(
            f"--num-layers-per-virtual-pipeline-stage={shape.layers // (cfg.pipeline * cfg.interleave)}"
        )
    if cfg.sequence_parallel:
        megatron.append("--sequence-parallel")
    if cfg.recompute == "full":
        megatron += ["--recompute-granularity=full", "--recompute-method=uniform", "--recompute-num-layers=1"]
    elif cfg.recompute == "selective":
        megatron.append("--recompute-granularity=selective")
    if cfg.zero_stage >= 1:
        megatron.append("--use-distributed-optimizer")
    deepspeed = {
        "train_batch_size": cfg.global_batch,
        "train_micro_batch_size_per_gpu": cfg.micro_batch,
        "gradient_accumulation_steps": cfg.micro_batches,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": True},
        "activation_checkpointing": {"partition_activations": cfg.recompute != "none"},
    }
    env = {
        "MODELPLANE_PARALLELISM": f"data={cfg.data},tensor={cfg.tensor},pipeline={cfg.pipeline},micro_batch_size={cfg.micro_batch}",
        "CUDA_DEVICE_MAX_CONNECTIONS": "1"
        if cfg.tensor > 1
        else "8",  # Megatron: TP comm/compute overlap order
        "OMP_NUM_THREADS": "1",
    }
    return LaunchSettings(torchrun=torchrun, env=env, megatron=megatron, deepspeed=deepspeed)
