"""``modelplane lineage``: where a dataset or model came from and what was built from it, via the API.

Walks come back as nodes with their hop count plus the edges between them; this module only turns
them into a Rich tree (or JSON with ``--json``). Names may hold slashes (``s3://raw/a``): they are
percent-encoded into the route.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from modelplane.core.errors import ModelplaneError

out = Console(width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 250)
lineage_app = typer.Typer(help="Trace datasets and models: upstream, downstream, impact.", no_args_is_help=True)

Kind = Annotated[str, typer.Argument(help="source, dataset, pipeline, training, checkpoint, model or deployment")]
Name = Annotated[str, typer.Argument(help="the node's name, e.g. s3://raw/a's name 'a' or a model 'llm:3'")]
Namespace = Annotated[str | None, typer.Option(help="the node's namespace, when its name is in several")]
Depth = Annotated[int, typer.Option(help="hops to walk, 1..64")]
Limit = Annotated[int, typer.Option(help="most nodes to return, 1..10000")]
AsJson = Annotated[bool, typer.Option("--json", help="print the API's JSON")]


def _fail(message: str, hint: str = "") -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}" + (f" [dim]({escape(hint)})[/dim]" if hint else ""),
              highlight=False)
    return typer.Exit(2)


def _get(path: str, params: dict[str, Any]) -> Any:
    from modelplane.client import Client
    from modelplane.settings import Settings

    try:
        return Client.from_settings(Settings()).get(path, params={k: v for k, v in params.items() if v is not None})
    except ModelplaneError as exc:
        raise _fail(exc.message, exc.hint) from None


def _route(kind: str, name: str, suffix: str = "") -> str:
    return f"/lineage/{quote(kind, safe='')}/{quote(name, safe='')}{suffix}"


def _label(n: dict[str, Any], depth: int | None = None) -> str:
    hops = f" [dim]({depth} hop{'s' if depth != 1 else ''})[/dim]" if depth is not None else ""
    return f"[bold]{escape(n['kind'])}[/bold] {escape(n['name'])} [dim]{escape(n['namespace'])}[/dim]{hops}"


def render_tree(res: dict[str, Any]) -> Tree:
    """The walk as a Rich tree from its start node (see ``data.lineage_tree``)."""
    from modelplane.data.lineage_tree import TreeNode, walk_tree

    arrow = "made from" if res["direction"] == "upstream" else "feeds"
    root = Tree(f"{_label(res['node'])} [dim]— {res['direction']}, {res['depth']} hop(s): {arrow}[/dim]")

    def add(branch: Tree, t: TreeNode) -> None:
        for c in t.children:
            more = f" [dim](+{c.also} more path{'s' if c.also > 1 else ''} here)[/dim]" if c.also else ""
            add(branch.add(_label(c.node, c.depth) + more), c)

    add(root, walk_tree(res["node"], res["items"], res.get("edges", []), res["direction"]))
    if not res["items"]:
        root.add("[dim]nothing recorded[/dim]")
    return root


def _walk(direction: str, kind: str, name: str, namespace: str | None, depth: int, limit: int, as_json: bool) -> None:
    res = _get(_route(kind, name, f"/{direction}"),
               {"namespace": namespace, "depth": depth, "limit": limit, "edges": "true"})
    if as_json:
        out.print_json(json.dumps(res))
        return
    out.print(render_tree(res))
    if len(res["items"]) >= limit:
        out.print(f"[yellow]showing the first {limit} nodes[/yellow] (raise --limit or lower --depth)")


@lineage_app.command("upstream")
def upstream(kind: Kind, name: Name, namespace: Namespace = None, depth: Depth = 5, limit: Limit = 1000,
             as_json: AsJson = False) -> None:
    """What KIND NAME was made from (datasets, sources, runs), as a tree."""
    _walk("upstream", kind, name, namespace, depth, limit, as_json)


@lineage_app.command("downstream")
def downstream(kind: Kind, name: Name, namespace: Namespace = None, depth: Depth = 5, limit: Limit = 1000,
               as_json: AsJson = False) -> None:
    """What was built from KIND NAME (datasets, models, deployments), as a tree."""
    _walk("downstream", kind, name, namespace, depth, limit, as_json)


@lineage_app.command("impact")
def impact(kind: Kind, name: Name, target: Annotated[str, typer.Option("--kind", help="kind of node to find")]
           = "deployment", namespace: Namespace = None, depth: Depth = 20, as_json: AsJson = False) -> None:
    """Which deployments (or --kind models, ...) were built from KIND NAME, e.g. a raw data source."""
    res = _get(_route(kind, name, "/impact"), {"namespace": namespace, "kind": target, "depth": depth})
    if as_json:
        out.print_json(json.dumps(res))
        return
    items = res["items"]
    out.print(f"{len(items)} {escape(target)}(s) downstream of {_label(res['node'])} within {depth} hops")
    for n in items:
        out.print(f"  {_label(n, n['depth'])}")


@lineage_app.command("show")
def show(kind: Kind, name: Name, namespace: Namespace = None, as_json: AsJson = False) -> None:
    """One node, its attributes and its direct inputs and outputs."""
    res = _get(_route(kind, name), {"namespace": namespace})
    if as_json:
        out.print_json(json.dumps(res))
        return
    n = res["node"]
    out.print(_label(n))
    for k, v in sorted(n["attrs"].items()):
        out.print(f"  {escape(str(k))}: {escape(str(v))}")
    for title, key in (("inputs", "upstream"), ("outputs", "downstream")):
        out.print(f"{title} ({len(res[key])}):")
        for m in res[key]:
            out.print(f"  {_label(m)}")


@lineage_app.command("search")
def search(name: Annotated[str | None, typer.Argument(help="part of a name or namespace")] = None,
           kind: Annotated[str | None, typer.Option(help="only nodes of this kind")] = None,
           namespace: Namespace = None, limit: Limit = 50, as_json: AsJson = False) -> None:
    """Find nodes by part of their name."""
    res = _get("/lineage/nodes", {"name": name, "kind": kind, "namespace": namespace, "limit": limit})
    if as_json:
        out.print_json(json.dumps(res))
        return
    for n in res["items"]:
        out.print(_label(n))
    if not res["items"]:
        out.print("no matching nodes")


@lineage_app.command("record")
def record_event(file: Annotated[Path, typer.Argument(help="an OpenLineage RunEvent as JSON; '-' reads stdin")],
                 job_kind: Annotated[str | None, typer.Option(help="pipeline, training or deployment")] = None) -> None:
    """Record an OpenLineage run event (what any OpenLineage producer emits)."""
    from modelplane.client import Client
    from modelplane.settings import Settings

    try:
        body = json.loads(sys.stdin.read() if str(file) == "-" else file.read_text())
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror}", "check the file path") from None
    except ValueError as exc:
        raise _fail(f"{file} is not valid JSON: {exc}", "an OpenLineage RunEvent is one JSON object") from None
    try:
        res = Client.from_settings(Settings()).post("/lineage/events", json=body,
                                                    params={"job_kind": job_kind} if job_kind else {})
    except ModelplaneError as exc:
        raise _fail(exc.message, exc.hint) from None
    out.print(f"recorded {_label(res['job'])}: {res['inputs']} input(s), {res['outputs']} output(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(lineage_app, name="lineage")
