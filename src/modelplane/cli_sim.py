"""``modelplane sim``: replay a real trace against a scheduling policy on a virtual clock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from modelplane.core.errors import ModelplaneError

err = Console(stderr=True)


def sim(
    trace: Annotated[str, typer.Argument(help="openb[:<pod list>], philly, or itp:<cluster 1-10>")],
    policy: Annotated[str, typer.Option(help="a scorer (openb) or a scheduler/baseline: default, fifo, "
                                             "easy, srtf, tiresias, ...")] = "default",
    out: Annotated[Path, typer.Option(help="folder for summary.json and the PNG plots")] = Path("sim-out"),
    seed: Annotated[int, typer.Option(help="shuffle seed")] = 42,
    nodes: Annotated[int, typer.Option(help="8-GPU nodes in the pool (job traces)")] = 64,
    days: Annotated[float | None, typer.Option(help="replay only this many days of a job trace")] = None,
    trace_root: Annotated[Path | None, typer.Option(help="folder of the traces; default ../shared/data/traces")] = None,
) -> None:
    """Replay a trace; prints one JSON summary and writes plots to --out."""
    from modelplane.sim.cli_entry import run_sim

    try:
        summary = run_sim(trace, policy, out, seed=seed, nodes=nodes, days=days, trace_root=trace_root)
    except ModelplaneError as exc:
        err.print(f"[red]error:[/red] {exc.message}" + (f" [dim]({exc.hint})[/dim]" if exc.hint else ""),
                  highlight=False)
        raise typer.Exit(2) from None
    print(json.dumps(summary))
    err.print(f"plots and summary.json in {out}")


def register(app: typer.Typer) -> None:
    app.command("sim")(sim)
