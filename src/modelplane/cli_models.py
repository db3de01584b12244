"""``modelplane models``: put ONNX files in the registry that deployments resolve ``registry://`` in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelplane.cli import _client, _fail, _guard, _table, out

models_app = typer.Typer(help="The model registry: register ONNX versions, promote them, list them.",
                         no_args_is_help=True)


@models_app.command("register")
def register_model(
    name: Annotated[str, typer.Argument(help="model name (lowercase, digits, - _ .)")],
    file: Annotated[Path, typer.Argument(help="the .onnx file")],
    stage: Annotated[str | None, typer.Option(help="promote the new version: staging or production")] = None,
    training_run: Annotated[str, typer.Option(help="the training job that produced it (lineage)")] = "",
    checkpoint: Annotated[str, typer.Option(help="the checkpoint URI it was exported from (lineage)")] = "",
    dataset: Annotated[str, typer.Option(help="the dataset URI it was trained on (lineage)")] = "",
) -> None:
    """Register FILE as the next version of NAME (checked with onnx.checker first); the lineage options
    link it to the run, checkpoint and dataset it came from."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror}", "check the file path") from None
    params = {"name": name} | ({"stage": stage} if stage else {})
    params |= {k: v for k, v in (("trainingRun", training_run), ("checkpoint", checkpoint), ("dataset", dataset)) if v}
    res = _guard(_client().post, "/models", params=params, content=data,
                 headers={"content-type": "application/octet-stream"})
    out.print(f"model {res['ref']} registered ({res['stage']}); deploy it as registry://{res['ref']}"
              + (f" or {name}@{res['stage']}" if res["stage"] != "archived" else ""), highlight=False)


@models_app.command("promote")
def promote_model(ref: Annotated[str, typer.Argument(help="NAME:VERSION")],
                  stage: Annotated[str, typer.Option(help="staging, production or archived")] = "production") -> None:
    """Move a version to a stage (production archives the previous production version)."""
    name, _, version = ref.partition(":")
    if not version.isdigit():
        raise _fail(f"cannot read {ref!r} as NAME:VERSION", "write it as digits:2")
    res = _guard(_client().post, f"/models/{name}/versions/{version}/stage", params={"stage": stage})
    out.print(f"model {res['ref']} is now {res['stage']}", highlight=False)


@models_app.command("list")
def list_models(name: Annotated[str | None, typer.Argument(help="one model's versions")] = None) -> None:
    """Every model (newest and production versions), or one model's versions."""
    client = _client()
    if name is None:
        res = _guard(client.get, "/models")
        _table(["NAME", "LATEST", "VERSIONS", "PRODUCTION"],
               [[m["name"], m["latest"], m["versions"], m["production"] or "-"] for m in res["items"]])
        return
    res = _guard(client.get, f"/models/{name}")
    _table(["REF", "STAGE", "BYTES", "URI"],
           [[v["ref"], v["stage"], v["metadata"].get("bytes", ""), v["uri"]] for v in res["items"]])


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
