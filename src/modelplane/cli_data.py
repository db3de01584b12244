"""``modelplane data``: pack small files into shards, scrub an erasure-coded store, run pipelines."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from modelplane.core.errors import ModelplaneError

data_app = typer.Typer(help="Prepare data: pack small files into shards, check erasure-coded stores, protect "
                       "sensitive datasets.",
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


@data_app.command("protect")
def protect(
    uri: Annotated[str, typer.Argument(help="the dataset: a local folder or file, or an fsspec URL (s3://...)")],
    team: Annotated[str | None, typer.Option(help="owning team (default: yours)")] = None,
) -> None:
    """Mark a dataset sensitive: encrypt its files in place with a new data key (AES-256-GCM) and hand
    the key to the control plane, which releases it only to confidential jobs on attested nodes.
    A packed shard set (``data pack``) is encrypted whole, index included, in small segments so that
    ShardedDataset keeps random access."""
    from pathlib import Path
    from urllib.parse import quote

    from modelplane.client import Client
    from modelplane.data.sensitive import DataKey, encrypt_dataset, normalize_uri
    from modelplane.data.shards import sealing_segment
    from modelplane.settings import Settings

    try:
        name = normalize_uri(uri if "://" in uri else str(Path(uri).resolve()))
        client = Client.from_settings(Settings())
        path = "/datasets/" + quote(name, safe="")
        found = client.request("GET", path)
        if found.get("sensitive"):
            raise ModelplaneError(f"dataset {name} is already sensitive (key {found['keyId']})",
                                  hint="its files are encrypted; write new data under a new URI and protect that")
        key = DataKey.generate()
        body = key.to_json() | ({"team": team} if team else {})
        report = encrypt_dataset(name, key, register=lambda: client.request("PUT", path, json=body),
                                 segment=sealing_segment(name))
    except ModelplaneError as exc:
        raise _fail(exc) from None
    out.print(f"{name} is sensitive: encrypted {report.encrypted} file(s) ({report.bytes / 1e6:.1f} MB) with key "
              f"{report.key_id}; jobs read it with modelplane.data.sensitive.open() (packed shards: "
              "ShardedDataset) and need spec.tee and spec.datasets", highlight=False)


@data_app.command("sensitive")
def list_sensitive(team: Annotated[str | None, typer.Option(help="this team's (default: yours)")] = None) -> None:
    """List the sensitive datasets (key ids only; keys never leave the control plane but to attested jobs)."""
    from modelplane.client import Client
    from modelplane.settings import Settings

    try:
        items = Client.from_settings(Settings()).request("GET", "/datasets", params={"team": team} if team else {})
    except ModelplaneError as exc:
        raise _fail(exc) from None
    table = Table(title="sensitive datasets")
    for col in ("uri", "team", "key id", "by"):
        table.add_column(col)
    for d in items["items"]:
        table.add_row(d["uri"], d["team"], d["keyId"], d["createdBy"])
    out.print(table)


pipeline_app = typer.Typer(help="Run Beam pipelines: sources -> validate -> transforms -> sinks.",
                            no_args_is_help=True)
data_app.add_typer(pipeline_app, name="pipeline")

_PHASES = {"compile": "compiling", "run": "running on Beam", "commit": "committing outputs",
           "ack": "acknowledging stream entries", "lineage": "recording lineage", "done": "done"}


@pipeline_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pipeline_run(
    ctx: typer.Context,
    spec: Annotated[str, typer.Argument(help="pipeline YAML, or a kind: Pipeline manifest")],
    lineage_url: Annotated[str | None, typer.Option("--lineage-url", help="lineage DB URL "
                                                    "(default: $MODELPLANE_LINEAGE_URL)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the run report as JSON")] = False,
) -> None:
    """Run a pipeline to completion on Beam (DirectRunner unless options or extra --runner=... say otherwise).

    Extra arguments go to Beam, e.g. -- --runner=FlinkRunner --flink_master=host:8081.
    """
    import json

    from modelplane.data.pipeline import from_file
    from modelplane.data.pipeline.runner import run

    with Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("loading spec", total=None)

        def on_phase(phase: str, info: dict[str, object]) -> None:
            bar.update(task, description=f"{defn.name}: {_PHASES.get(phase, phase)}")

        try:
            defn = from_file(spec)
            report = run(defn, lineage_url=lineage_url, beam_args=list(ctx.args), progress=on_phase)
        except ModelplaneError as exc:
            raise _fail(exc) from None
    if as_json:
        out.print_json(json.dumps(report.to_dict()))
        return
    table = Table(title=f"pipeline {report.pipeline} (run {report.run_id}, {report.seconds:.1f} s)")
    table.add_column("output")
    table.add_column("format")
    table.add_column("records", justify="right")
    table.add_column("files", justify="right")
    for path, s in report.sinks.items():
        table.add_row(path, str(s["format"]), str(s["records"]), str(s["files"]))
    dl = report.dead_letter
    table.add_row(f"{dl['path']} (dead letter)", defn.dead_letter.format, str(dl["records"]), str(dl["files"]))
    out.print(table)
    out.print(f"read {report.read} records, {report.invalid} invalid (reasons in the dead letter)"
              + (f", acked {report.acked}" if report.acked else "")
              + (f", lineage node {report.lineage_node}" if report.lineage_node is not None else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
