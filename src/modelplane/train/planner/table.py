"""Plain-text rendering of ranked predictions, and ``python -m modelplane.train.planner``
(the body of ``modelplane plan``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from modelplane.train.planner.search import Prediction


def render_table(predictions: Sequence[Prediction]) -> str:
    header = f"{'#':>2} {'dp':>4} {'tp':>3} {'pp':>4} {'v':>2} {'mb':>3} {'recompute':>9} {'sp':>3} {'GB/dev':>7} {'step s':>8} {'tok/s':>10} {'TFLOP/s':>8} {'MFU':>6}"
    lines = [header, "-" * len(header)]
    for i, pr in enumerate(predictions, 1):
        c = pr.config
        lines.append(
            f"{i:>2} {c.data:>4} {c.tensor:>3} {c.pipeline:>4} {c.interleave:>2} {c.micro_batch:>3} {c.recompute:>9} "
            f"{'y' if c.sequence_parallel else '-':>3} {pr.memory.total / 1e9:>7.1f} {pr.time.total:>8.2f} "
            f"{pr.tokens_per_s:>10.0f} {pr.flops_per_gpu / 1e12:>8.1f} {pr.mfu:>6.1%}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from modelplane.train.planner.launch import launch_settings
    from modelplane.train.planner.search import recommend
    from modelplane.train.planner.shapes import Cluster, TransformerShape, device

    ap = argparse.ArgumentParser(
        prog="modelplane plan", description="rank data x tensor x pipeline configurations"
    )
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--hidden", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--vocab", type=int, default=51200)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--global-batch", type=int, required=True)
    ap.add_argument("--gpus", type=int, required=True)
    ap.add_argument("--device", default="a100-80gb")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--intra-gbps", type=float, default=240.0, help="GB/s per device inside a node")
    ap.add_argument("--inter-gbps", type=float, default=20.0, help="GB/s per device between nodes")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument(
        "--json", action="store_true", help="print the best configuration's launch settings as JSON"
    )
    a = ap.parse_args(argv)
    shape = TransformerShape(a.layers, a.hidden, a.heads, a.vocab, a.seq)
    cluster = Cluster(device(a.device), a.gpus, a.gpus_per_node, a.intra_gbps * 1e9, a.inter_gbps * 1e9)
    ranked = recommend(shape, cluster, a.global_batch, top=a.top)
    if a.json:
        s = launch_settings(shape, ranked[0].config, cluster)
        print(
            json.dumps(
                {
                    "config": ranked[0].config.describe(),
                    "torchrun": s.torchrun,
                    "env": s.env,
                    "megatron": s.megatron,
                    "deepspeed": s.deepspeed,
                },
                indent=1,
            )
        )
    else:
        print(f"{shape.parameters / 1e9:.1f}B parameters on {a.gpus} x {cluster.device.name}")
        print(render_table(ranked))
    return 0
