"""``modelplane data``: pack small files into shards, scrub an erasure-coded store."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from modelplane.core.errors import ModelplaneError

data_app = typer.Typer(help="Prepare data: pack small files into shards, check erasure-coded stores.",
                       no_args_is_help=True)
out = Console()
err = Console(stderr=True)


def _fail(exc: ModelplaneError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc.message}" + (f" [dim]({exc.hint})[/dim]" if exc.hint else ""),
              highlight=False)
    return typer.Exit(2)


@data_app.command("pack")
def pack(
    src: Annotated[str, typer.Argument(help="folder of small files: a path, s3://bucket/prefix or ec://...")],
    dest: Annotated[str, typer.Argument(help="where the shards and index.json go (any fsspec URL)")],
    shard_size_mb: Annotated[int, typer.Option("--shard-size-mb", min=1, help="target shard size")] = 256,
) -> None:
    """Pack every file under SRC into TFRecord-compatible shards with a per-sample offset index."""
    from modelplane.data.shards import PackProgress
    from modelplane.data.shards import pack as pack_files

    with Progress(TextColumn("[bold]packing"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                  TimeRemainingColumn(), console=err, transient=True) as bar:
        task = bar.add_task("pack", total=None)

        def on_progress(p: PackProgress) -> None:
            bar.update(task, completed=p.files_done, total=p.files_total)

        try:
            result = pack_files(src, dest, shard_size=shard_size_mb << 20, progress=on_progress)
        except ModelplaneError as exc:
            raise _fail(exc) from None
        except FileNotFoundError as exc:
            raise _fail(ModelplaneError(f"{exc.filename or src} does not exist",
                                        hint="check the SRC path or URL")) from None
    out.print(f"packed {result.samples} files ({result.payload_bytes / 1e6:.1f} MB) into {result.shards} "
              f"shard(s) at {result.dest}")


@data_app.command("scrub")
def scrub(
    root: Annotated[str, typer.Argument(help="root folder of an erasure-coded store (disk0..diskN inside)")],
    prefix: Annotated[str, typer.Option(help="only objects under this key prefix")] = "",
    repair: Annotated[bool, typer.Option(help="rewrite missing or corrupt fragments")] = True,
) -> None:
    """Read every object's fragments, report the damaged ones, and repair them from parity."""
    from modelplane.data.ecstore import ErasureCodedStore

    try:
        damaged = ErasureCodedStore.at_root(root).scrub(prefix, repair=repair)
    except ModelplaneError as exc:
        raise _fail(exc) from None
    if not damaged:
        out.print("no damaged object")
        return
    unrecoverable = 0
    for key, report in sorted(damaged.items()):
        state = "repaired" if report.repaired else ("UNRECOVERABLE: " + report.error if report.error else "damaged")
        unrecoverable += bool(report.error)
        out.print(f"{key}: fragments {sorted(report.damaged)} {state}", highlight=False)
    raise typer.Exit(1 if unrecoverable or not repair else 0)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
