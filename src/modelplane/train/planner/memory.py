"""Memory per device: model states (ZeRO accounting) plus activations (Korthikanti et al. 2022,
"Reducing Activation Recomputation in Large Transformer Models"; Megatron-LM
``theoretical_memory_usage.py``). Bytes, for bf16/fp16 mixed precision with Adam."""

from __future__ import annotations

from dataclasses import dataclass

from modelplane.train.planner.shapes import ParallelConfig, TransformerShape


@dataclass(frozen=True)
class MemoryEstimate:
    parameters_per_device: float
    model_states: float
    activations: float
    logits: float

    @property
    def total(self) -> float:
        return self.model_states + self.activations + self.logits


def state_bytes_per_param(zero_stage: int, dp: int) -> float:
    """16 bytes/param (2 weights + 2 grads + 12 fp32 master, momentum, variance), sharded by ZeRO:
    stage 1: 4 + 12/N, stage 2: 2 + 14/N, stage 3: 16/N (Rajbhandari et al., ZeRO)."""
    return {0: 16.0, 1: 4 + 12 / dp, 2: 2 + 14 / dp, 3: 16 / dp}[zero_stage]


def activation_bytes_per_layer(shape: TransformerShape, cfg: ParallelConfig) -> float:
    """Stored activations of one layer for one micro-batch (Korthikanti et al., table 2)."""
    s, b, h, a, t = shape.seq, cfg.micro_batch, shape.hidden, shape.heads, cfg.tensor
    if cfg.recompute == "full":
        return 2 * s * b * h / (t if cfg.sequence_parallel else 1)
    if cfg.recompute == "selective":
        if cfg.sequence_parallel:
            return 34 * s * b * h / t
        return s * b * h * (10 + 24 / t)
    if cfg.sequence_parallel:
        return s * b * h / t * (34 + 5 * a * s / h)
    return s * b * h * (10 + 24 / t + 5 * a * s / (h * t))


def estimate_memory(shape: TransformerShape, cfg: ParallelConfig) -> MemoryEstimate:
    """The busiest device: the first pipeline stage, which holds the embedding and, under 1F1B,
    the activations of min(p, m) micro-batches in flight (interleaving adds (p-1)/(p v) more)."""
    p, t = cfg.pipeline, cfg.tensor
    layers_per_stage = shape.layers / p
    params = (layers_per_stage * shape.layer_parameters + shape.embedding_parameters) / t
    states = params * state_bytes_per_param(cfg.zero_stage, cfg.data)
    in_flight: float = min(p, cfg.micro_batches)
    if cfg.interleave > 1 and p > 1:
        in_flight = in_flight * (1 + (p - 1) / (p * cfg.interleave))
    activations = activation_bytes_per_layer(shape, cfg) * layers_per_stage * in_flight
    # fp32 logits of the output layer for the loss (last stage; counted as if co-located when p == 1)
    logits = 4 * shape.seq * cfg.micro_batch * shape.vocab / t if p == 1 else 0.0
    return MemoryEstimate(params, states, activations, logits)
