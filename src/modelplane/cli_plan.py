"""``modelplane plan``: rank data x tensor x pipeline configurations for a transformer on a pool of
devices, and emit the launch settings of the best one.

A thin shell over :mod:`modelplane.train.planner` (pure, no torch): this module only turns
options into a shape, a device and a cluster, and renders the answer (a Rich table, or JSON).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from modelplane.core.errors import ModelplaneError

out = Console(width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 250)


def _device(name: str, memory_gb: float | None, peak_tflops: float | None) -> Any:
    """A named device, with memory or peak overridden; or a custom one when both are given."""
    from modelplane.train.errors import InvalidParallelConfig
    from modelplane.train.planner.shapes import DEVICES, Device, device

    for opt, value in (("--memory-gb", memory_gb), ("--peak-tflops", peak_tflops)):
        if value is not None and value <= 0:
            raise InvalidParallelConfig(f"{opt} must be positive, got {value:g}", field=opt.lstrip("-"),
                                        hint="give the device's memory in GB and dense bf16 peak in TFLOP/s")
    if name.lower() not in DEVICES:
        if memory_gb is None or peak_tflops is None:
            raise InvalidParallelConfig(f"unknown device {name!r}", field="device",
                                        hint=f"use one of {', '.join(sorted(DEVICES))}, or describe it with "
                                             "--memory-gb and --peak-tflops")
        return Device(name, memory_gb * 1e9, peak_tflops * 1e12)
    base = device(name)
    return Device(base.name,
                  base.memory_bytes if memory_gb is None else memory_gb * 1e9,
                  base.peak_flops if peak_tflops is None else peak_tflops * 1e12)


def _prediction_json(pr: Any) -> dict[str, Any]:
    c = pr.config
    return {
        "config": c.describe(),
        "data": c.data, "tensor": c.tensor, "pipeline": c.pipeline, "interleave": c.interleave,
        "micro_batch": c.micro_batch, "global_batch": c.global_batch, "zero_stage": c.zero_stage,
        "recompute": c.recompute, "sequence_parallel": c.sequence_parallel,
        "memory_gb_per_device": round(pr.memory.total / 1e9, 3),
        "step_s": round(pr.time.total, 6),
        "tokens_per_s": round(pr.tokens_per_s, 1),
        "tflops_per_device": round(pr.flops_per_gpu / 1e12, 2),
        "mfu": round(pr.mfu, 4),
    }


def _table(ranked: list[Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("#", "dp", "tp", "pp", "v", "mb", "zero", "recompute", "sp", "GB/dev", "step s", "tok/s",
                 "TFLOP/s", "MFU"):
        table.add_column(name, justify="left" if name == "recompute" else "right")
    for i, pr in enumerate(ranked, 1):
        c = pr.config
        table.add_row(str(i), str(c.data), str(c.tensor), str(c.pipeline), str(c.interleave), str(c.micro_batch),
                      str(c.zero_stage), c.recompute, "y" if c.sequence_parallel else "-",
                      f"{pr.memory.total / 1e9:.1f}", f"{pr.time.total:.2f}", f"{pr.tokens_per_s:,.0f}",
                      f"{pr.flops_per_gpu / 1e12:.1f}", f"{pr.mfu:.1%}")
    return table


def plan(
    layers: Annotated[int, typer.Option(help="transformer layers")],
    hidden: Annotated[int, typer.Option(help="hidden size")],
    heads: Annotated[int, typer.Option(help="attention heads")],
    global_batch: Annotated[int, typer.Option("--global-batch", help="sequences per optimizer step")],
    gpus: Annotated[int, typer.Option(help="devices in the job")],
    vocab: Annotated[int, typer.Option(help="vocabulary size")] = 51200,
    seq: Annotated[int, typer.Option(help="sequence length")] = 2048,
    device: Annotated[str, typer.Option(help="a100-40gb, a100-80gb, h100-sxm, h200, mi250x, ascend-910b, "
                                             "or any name with --memory-gb and --peak-tflops")] = "a100-80gb",
    memory_gb: Annotated[float | None, typer.Option("--memory-gb", help="device memory in GB")] = None,
    peak_tflops: Annotated[float | None, typer.Option("--peak-tflops", help="dense bf16 peak, TFLOP/s")] = None,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", help="devices per node")] = 8,
    intra_gbps: Annotated[float, typer.Option("--intra-gbps", help="GB/s per device inside a node")] = 240.0,
    inter_gbps: Annotated[float, typer.Option("--inter-gbps", help="GB/s per device between nodes")] = 20.0,
    top: Annotated[int, typer.Option(help="how many configurations to show")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="print the ranking and the best configuration's "
                                                         "launch settings as JSON")] = False,
) -> None:
    """Rank data x tensor x pipeline configurations by predicted throughput."""
    from modelplane.train.planner import Cluster, TransformerShape, launch_settings, recommend

    try:
        if top < 1:
            from modelplane.train.errors import InvalidParallelConfig

            raise InvalidParallelConfig(f"--top must be at least 1, got {top}", field="top", hint="e.g. --top 5")
        shape = TransformerShape(layers, hidden, heads, vocab, seq)
        cluster = Cluster(_device(device, memory_gb, peak_tflops), gpus, gpus_per_node, intra_gbps * 1e9,
                          inter_gbps * 1e9)
        ranked = recommend(shape, cluster, global_batch, top=top)
    except ModelplaneError as exc:
        err.print(f"[red]error:[/red] {exc.message}" + (f" [dim]({exc.hint})[/dim]" if exc.hint else ""),
                  highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        s = launch_settings(shape, ranked[0].config, cluster)
        print(json.dumps({
            "parameters": shape.parameters,
            "device": {"name": cluster.device.name, "memory_bytes": cluster.device.memory_bytes,
                       "peak_flops": cluster.device.peak_flops},
            "gpus": gpus,
            "best": _prediction_json(ranked[0]),
            "ranked": [_prediction_json(pr) for pr in ranked],
            "launch": {"torchrun": s.torchrun, "env": s.env, "megatron": s.megatron, "deepspeed": s.deepspeed},
        }, indent=1))
        return
    title = (f"{shape.parameters / 1e9:.1f}B parameters, global batch {global_batch}, on {gpus} x "
             f"{cluster.device.name} ({gpus_per_node}/node)")
    out.print(_table(ranked, title))


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
