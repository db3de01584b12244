"""What the planner reasons about: a transformer's shape, a device, a cluster, a parallel config.

Pure data and closed-form counts (no torch). Formulas from Narayanan et al., "Efficient
Large-Scale Language Model Training on GPU Clusters Using Megatron-LM" (SC'21), section 5.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from modelplane.train.errors import InvalidParallelConfig

Recompute = Literal["none", "selective", "full"]
RECOMPUTE_MODES: tuple[Recompute, ...] = ("none", "selective", "full")


@dataclass(frozen=True)
class TransformerShape:
    layers: int
    hidden: int
    heads: int
    vocab: int
    seq: int

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "heads", "vocab", "seq"):
            if getattr(self, name) <= 0:
                raise InvalidParallelConfig(f"model {name} must be positive", field=f"model.{name}")
        if self.hidden % self.heads:
            raise InvalidParallelConfig(
                f"hidden {self.hidden} is not divisible by heads {self.heads}",
                field="model.heads",
                hint="every head needs hidden/heads dimensions",
            )

    @property
    def parameters(self) -> float:
        """P = 12 l h^2 (1 + 13/(12h) + (V+s)/(12 l h)) (SC'21, eq. 2 context)."""
        nl, h, v, s = self.layers, self.hidden, self.vocab, self.seq
        return 12 * nl * h * h * (1 + 13 / (12 * h) + (v + s) / (12 * nl * h))

    @property
    def layer_parameters(self) -> float:
        h = self.hidden
        return 12 * h * h + 13 * h

    @property
    def embedding_parameters(self) -> float:
        return (self.vocab + self.seq) * self.hidden

    def flops_per_iteration(self, global_batch: int, recompute: Recompute = "full") -> float:
        """Model FLOPs of one iteration, F = k B s l h^2 (1 + s/(6h) + V/(16 l h)).

        k = 72 for forward + backward, 96 when the forward pass runs again for full
        recomputation (the figure SC'21 reports); selective recomputation adds only the
        attention-score recompute (the s/(6h) term once more).
        """
        nl, h, v, s = self.layers, self.hidden, self.vocab, self.seq
        base = global_batch * s * nl * h * h
        if recompute == "full":
            return 96 * base * (1 + s / (6 * h) + v / (16 * nl * h))
        forward_backward = 72 * base * (1 + s / (6 * h) + v / (16 * nl * h))
        if recompute == "selective":
            return forward_backward + 24 * base * s / (6 * h)
        return forward_backward

    def model_flops_per_token(self) -> float:
        """6N plus attention, for MFU (no recomputation counted)."""
        return self.flops_per_iteration(1, "none") / self.seq


@dataclass(frozen=True)
class Device:
    name: str
    memory_bytes: float
    peak_flops: float  # dense bf16/fp16 FLOP/s


DEVICES: dict[str, Device] = {
    "a100-40gb": Device("a100-40gb", 40e9, 312e12),
    "a100-80gb": Device("a100-80gb", 80e9, 312e12),
    "h100-sxm": Device("h100-sxm", 80e9, 989e12),
    "h200": Device("h200", 141e9, 989e12),
    "mi250x": Device("mi250x", 128e9, 383e12),
    "ascend-910b": Device("ascend-910b", 64e9, 320e12),
}


def device(name: str) -> Device:
    try:
        return DEVICES[name.lower()]
    except KeyError:
        raise InvalidParallelConfig(
            f"unknown device {name!r}", field="device", hint=f"use one of {sorted(DEVICES)} or pass a Device"
        ) from None


@dataclass(frozen=True)
class Cluster:
    """Devices and links. Bandwidths are per device, one direction, in bytes/s."""

    device: Device
    gpus: int
    gpus_per_node: int = 8
    intra_node_bw: float = 300e9 * 0.8  # NVLink 3 / NVSwitch, achievable bus bandwidth
    inter_node_bw: float = 25e9 * 0.8  # one 200 Gb/s HCA per GPU (DGX A100)

    def __post_init__(self) -> None:
        if self.gpus <= 0 or self.gpus_per_node <= 0:
            raise InvalidParallelConfig("gpus and gpus_per_node must be positive", field="gpus")
        if self.intra_node_bw <= 0 or self.inter_node_bw <= 0:
            raise InvalidParallelConfig("bandwidths must be positive (bytes/s)", field="inter_node_bw")


@dataclass(frozen=True)
class ParallelConfig:
    data: int
    tensor: int
    pipeline: int
    micro_batch: int
    global_batch: int
    zero_stage: int = 1  # Megatron's distributed optimizer ~ ZeRO-1
    recompute: Recompute = "full"
    sequence_parallel: bool = False
    interleave: int = 1  # virtual pipeline stages per device

    @property
    def gpus(self) -> int:
        return self.data * self.tensor * self.pipeline

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per iteration (m)."""
        return self.global_batch // (self.data * self.micro_batch)

    def describe(self) -> str:
        return (
            f"dp={self.data} tp={self.tensor} pp={self.pipeline}"
            + (f"x{self.interleave}" if self.interleave > 1 else "")
            + f" mb={self.micro_batch} gb={self.global_batch} zero={self.zero_stage} rc={self.recompute}"
            + (" sp" if self.sequence_parallel else "")
        )
