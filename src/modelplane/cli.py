"""The ``modelplane`` command: noun-style user commands and the server entry points.

Every user error is one line on stderr and exit code 2; never a traceback.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from modelplane import __version__
from modelplane.core.errors import ModelplaneError

app = typer.Typer(help="modelplane: one pool of heterogeneous accelerators for training and serving.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
get_app = typer.Typer(help="List jobs, deployments, nodes or queues.", no_args_is_help=True)
describe_app = typer.Typer(help="Show one object in detail.", no_args_is_help=True)
delete_app = typer.Typer(help="Delete (cancel) an object.", no_args_is_help=True)
cluster_app = typer.Typer(help="Manage the pool.", no_args_is_help=True)
app.add_typer(get_app, name="get")
app.add_typer(describe_app, name="describe")
app.add_typer(delete_app, name="delete")
app.add_typer(cluster_app, name="cluster")

# Piped output keeps whole lines (no terminal width to fit), as kubectl's does.
out = Console(width=None if sys.stdout.isatty() else 250)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 250)
T = TypeVar("T")


def _fail(message: str, hint: str = "") -> typer.Exit:
    err.print(f"[red]error:[/red] {message}" + (f" [dim]({hint})[/dim]" if hint else ""), highlight=False)
    return typer.Exit(2)


def _guard(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except ModelplaneError as exc:
        raise _fail(exc.message, exc.hint) from None


def _client() -> Any:
    from modelplane.client import Client
    from modelplane.settings import Settings

    return Client.from_settings(Settings())


def _load_docs(path: Path) -> list[Any]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}", "check the file path") from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise _fail(f"{path} is not valid YAML: {exc}".replace("\n", " "), "fix the YAML syntax") from None
    if not docs:
        raise _fail(f"{path} holds no document", "write a manifest; see examples/")
    return docs


@app.command()
def version() -> None:
    """Print the modelplane version."""
    out.print(f"modelplane {__version__}")


ClusterOpt = Annotated[Path | None, typer.Option("--cluster", "-c", help="nodes and queues to import")]
HostOpt = Annotated[str | None, typer.Option(help="address to listen on")]
PortOpt = Annotated[int | None, typer.Option(help="port to listen on")]


@app.command()
def up(cluster_file: ClusterOpt = None, host: HostOpt = None, port: PortOpt = None) -> None:
    """Run the whole platform in this process: API, scheduler, job controller, node health."""
    _serve(cluster_file, host, port, with_controllers=True)


@app.command("api")
def api_only(cluster_file: ClusterOpt = None, host: HostOpt = None, port: PortOpt = None) -> None:
    """Run only the HTTP API; the controllers run as their own processes (run-controller)."""
    _serve(cluster_file, host, port, with_controllers=False)


def _serve(cluster_file: Path | None, host: str | None, port: int | None, with_controllers: bool) -> None:
    import uvicorn

    from modelplane.api.app import create_app
    from modelplane.platform import CONTROLLERS, build_platform
    from modelplane.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {}
    if cluster_file:
        overrides["cluster_file"] = cluster_file
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    settings = Settings(**overrides)
    platform = _guard(build_platform, settings, CONTROLLERS if with_controllers else ())
    app_ = create_app(platform.store, log_reader=platform.backend)
    url = settings.resolved_api_url
    out.print(f"modelplane {__version__} on {platform.store.dialect} — API at [bold]{url}[/bold] (docs: {url}/docs)")
    if platform.admin_token:
        out.print(f"admin token (shown once; saved for the CLI in {settings.home / 'credentials'}):")
        out.print(f"  [bold]{platform.admin_token}[/bold]", soft_wrap=True)
    else:
        out.print(f"admin token: created at first start; the CLI reads it from {settings.home / 'credentials'}")
    sys.stdout.flush()
    platform.loop.start()
    try:
        uvicorn.run(app_, host=settings.host, port=settings.port, log_level="warning")
    finally:
        platform.loop.stop()


@app.command("run-controller")
def run_controller(name: Annotated[str, typer.Argument(help="scheduler, jobs, node-health, node-agent or deployments")]) -> None:
    """Run one controller alone against MODELPLANE_DATABASE_URL (production: one process each)."""
    from modelplane.platform import CONTROLLERS, build_platform
    from modelplane.settings import Settings

    if name not in CONTROLLERS:
        raise _fail(f"unknown controller {name!r}", f"use one of: {', '.join(CONTROLLERS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    platform = _guard(build_platform, Settings(), (name,), serves_api=False)
    out.print(f"controller {name} running against {platform.store.dialect}; Ctrl-C stops it")
    try:
        while True:
            platform.loop.run_once()
            time.sleep(platform.settings.reconcile_interval)
    except KeyboardInterrupt:
        pass


@app.command()
def apply(file: Annotated[Path, typer.Option("--file", "-f", help="YAML manifest(s); '-' reads stdin")]) -> None:
    """Submit jobs (TrainingJob, InferenceDeployment, Pipeline, FederatedJob) or a Cluster/Queue."""
    client = _client()
    for doc in _load_docs(file):
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind == "Cluster":
            res = _guard(client.post, "/cluster/import", json=doc)
            out.print(f"cluster imported: {len(res['nodes'])} node(s), {len(res['queues'])} queue(s)")
        elif kind == "Queue":
            spec = dict(doc.get("spec") or {})
            spec.setdefault("name", (doc.get("metadata") or {}).get("name"))
            res = _guard(client.post, "/queues", json=spec)
            out.print(f"queue/{res['name']} configured")
        else:
            res = _guard(client.post, "/jobs", json=doc)
            verb = "unchanged" if res.get("unchanged") else "configured" if res.get("configured") else "created"
            extra = ""
            if res.get("configured"):  # a deployment: a new revision rolls out, or the change applied in place
                rev = res["revision"]["number"]
                extra = f", rolling out revision {rev}" if res.get("rollout") else f", revision {rev} updated in place"
            out.print(f"{res['kind'].lower()}/{res['name']} {verb} (queue {res['queue']}, state {res['state']}{extra})")


def _table(columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(box=None, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[str(x) if x is not None else "" for x in r])
    out.print(t)


def _age(ts: float | None) -> str:
    if not ts:
        return ""
    s = int(time.time() - ts)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def _fmt_models(d: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in d.items()) or "-"


@get_app.command("jobs")
def get_jobs(
    state: Annotated[list[str] | None, typer.Option("--state", help="filter by state")] = None,
    queue: Annotated[str | None, typer.Option(help="filter by queue")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 100,
) -> None:
    """List jobs."""
    client = _client()
    params: dict[str, Any] = {"limit": limit}
    if state:
        params["state"] = state
    if queue:
        params["queue"] = queue
    res = _guard(client.get, "/jobs", params=params)
    _table(["NAME", "KIND", "QUEUE", "STATE", "PRIORITY", "AGE", "REASON"],
           [[j["name"], j["kind"], j["queue"], j["state"], j["priority"], _age(j["createdAt"]),
             j["pendingReason"] if j["state"] == "Pending" else j["reason"]] for j in res["items"]])


@get_app.command("nodes")
def get_nodes() -> None:
    """List nodes with their accelerators, topology and state."""
    res = _guard(_client().get, "/nodes")
    rows = []
    for n in res["items"]:
        acc = n["spec"].get("accelerators") or {}
        topo = n["spec"].get("topology") or {}
        rows.append([n["name"], n["state"], f"{acc.get('count', 0)} x {acc['model']}" if acc else "-",
                     n["spec"].get("cpu"), n["spec"].get("memory"),
                     f"{topo.get('group', 'default')}/{topo.get('switch', 'default')}",
                     "spot" if n["spec"].get("spot") else ""])
    _table(["NAME", "STATE", "ACCELERATORS", "CPU", "MEMORY", "GROUP/SWITCH", ""], rows)


@get_app.command("queues")
def get_queues() -> None:
    """List queues: quota, usage, borrowed and lent per accelerator model."""
    res = _guard(_client().get, "/queues")
    _table(["NAME", "KIND", "COHORT", "QUOTA", "USED", "BORROWED", "LENT", "RUNNING", "PENDING"],
           [[q["name"], q["kind"], q["cohort"] or "-", _fmt_models(q["quota"]), _fmt_models(q["used"]),
             _fmt_models(q["borrowed"]), _fmt_models(q["lent"]), q["running"], q["pending"]] for q in res["items"]])


@describe_app.command("job")
def describe_job(name: str) -> None:
    """A job's state, placement, tasks, events, and why it is pending."""
    j = _guard(_client().get, f"/jobs/{name}")
    out.print(f"[bold]{j['kind']}/{j['name']}[/bold]  id {j['id']}")
    out.print(f"  queue {j['queue']}, team {j['team']}, priority {j['priority']}, restarts {j['restarts']}")
    out.print(f"  state [bold]{j['state']}[/bold]  {j['reason']}: {j['message']}", highlight=False)
    if j["state"] == "Pending":
        out.print(f"  why pending: {j['pendingReason']}", highlight=False)
    if j["placement"]:
        out.print("  placement:")
        for a in j["placement"]:
            dev = f" devices {a['devices']}" + (f" ({a['gpu_milli'] / 1000:g} each)" if a["gpu_milli"] < 1000 else "") \
                if a["devices"] else ""
            out.print(f"    rank {a['rank']} ({a['pod_set']}) on {a['node']}{dev}", highlight=False)
    if j.get("tasks"):
        out.print("  tasks:")
        for t in j["tasks"]:
            code = f" exit {t['exitCode']}" if t["exitCode"] is not None else ""
            out.print(f"    rank {t['rank']} {t['phase']}{code} {t['message']}", highlight=False)
    out.print("  events:")
    for e in j.get("events", []):
        arrow = f"{e['from'] or ''} -> {e['to']}" if e["to"] else ""
        out.print(f"    {time.strftime('%H:%M:%S', time.localtime(e['time']))} {e['type']:<7} {e['reason']:<16} "
                  f"{arrow} {e['message']}", highlight=False)


@get_app.command("deployments")
def get_deployments() -> None:
    """List inference deployments: ready/desired replicas and the load the autoscaler sees."""
    res = _guard(_client().get, "/deployments")
    rows = []
    for d in res["items"]:
        seen = d["status"].get("observed") or {}
        rows.append([d["name"], d["model"], _revision_cell(d), f"{d['ready']}/{d['desired']}",
                     f"{seen.get('inFlight', 0):.1f}" + (f"+{seen['waiting']:.0f}" if seen.get("waiting") else ""),
                     f"{seen.get('rps', 0):.1f}", d["state"], _age(d["createdAt"])])
    _table(["NAME", "MODEL", "REVISION", "READY/DESIRED", "IN-FLIGHT", "RPS", "STATE", "AGE"], rows)


def _revision_cell(d: dict[str, Any]) -> str:
    """``2``; ``1->2`` while revision 2 rolls out; ``1 (2 failed)`` after its rollout stopped."""
    rev = d.get("revision") or {}
    serving, rollout = rev.get("serving") or rev.get("number", 1), rev.get("rollout")
    if rollout is None:
        return str(serving)
    if rollout.get("phase") == "Failed":
        return f"{serving} ({rollout['number']} failed)"
    return f"{serving}->{rollout['number']}"


@describe_app.command("deployment")
def describe_deployment(name: str) -> None:
    """A deployment's model, replicas and their endpoints, load, and recent scaling decisions."""
    d = _guard(_client().get, f"/deployments/{name}")
    st = d["status"]
    out.print(f"[bold]InferenceDeployment/{d['name']}[/bold]  team {d['team']}, queue {d['queue']}")
    out.print(f"  model {d['model']}" + (f" -> {st['modelRef']}" if st.get("modelRef") else ""), highlight=False)
    out.print(f"  state [bold]{d['state']}[/bold]  ready {d['ready']}/{d['desired']}", highlight=False)
    serving, rollout = st.get("revision") or {}, st.get("rollout")
    if serving:
        out.print(f"  revision {serving['number']} ({serving['hash']}) serving model {serving.get('modelRef')}",
                  highlight=False)
    if rollout:
        new = [r for r in st.get("replicas", []) if r.get("revisionHash") == rollout["hash"]]
        line = (f"  rollout to revision {rollout['number']} ({rollout['hash']}): {rollout['phase']}, "
                f"{sum(bool(r['ready']) for r in new)}/{d['desired']} new replicas ready, "
                f"{rollout.get('failures', 0)} failed")
        out.print(line if rollout["phase"] != "Failed" else f"[red]{escape(line)}[/red]", highlight=False)
        if rollout.get("message"):
            out.print(f"    {escape(rollout['message'])}", highlight=False)
    if st.get("error"):
        out.print(f"  [red]error:[/red] {escape(st['error'])}", highlight=False)
    auto = (d["manifest"].get("spec") or {}).get("autoscaling")
    if auto:
        out.print(f"  autoscaling: min {auto.get('minReplicas', 1)}, max {auto.get('maxReplicas', 1)}, "
                  f"target concurrency {auto.get('targetConcurrency', 2)}", highlight=False)
    seen = st.get("observed") or {}
    out.print(f"  load: in flight {seen.get('inFlight', 0):.1f}, waiting {seen.get('waiting', 0):.1f}, "
              f"{seen.get('rps', 0):.1f} req/s", highlight=False)
    out.print(f"  inference: POST /api/v1/deployments/{d['name']}/infer  {{\"inputs\": [[...]]}}", highlight=False)
    out.print("  replicas:")
    for r in st.get("replicas", []):
        flag = "ready" if r["ready"] else ("draining" if r["draining"] else "not ready")
        rev = f"rev {r['revision']}" if r.get("revision") is not None else "rev -"
        out.print(f"    {r['name']:<24} {rev:<7} {r['state']:<10} {flag:<10} {r['node'] or '-':<12} "
                  f"{r['endpoint'] or '-'}", highlight=False)
    out.print("  events:")
    for e in st.get("events", [])[-15:]:
        out.print(f"    {time.strftime('%H:%M:%S', time.localtime(e['time']))} {e['reason']:<16} {escape(e['message'])}",
                  highlight=False)


@app.command()
def logs(
    name: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the job ends")] = False,
    rank: Annotated[int | None, typer.Option(help="only this rank")] = None,
) -> None:
    """Print a job's task logs, each line prefixed with its rank."""
    client = _client()
    offsets: dict[int, int] = {}
    while True:
        params: dict[str, Any] = {"offsets": ",".join(f"{r}:{o}" for r, o in offsets.items())}
        if rank is not None:
            params["rank"] = rank
        res = _guard(client.get, f"/jobs/{name}/logs", params=params)
        for item in res["items"]:
            offsets[item["rank"]] = item["offset"]
            for line in item["text"].splitlines():
                prefix = escape(f"[rank {item['rank']}]")
                out.print(f"[dim]{prefix}[/dim] {escape(line)}", highlight=False)
        if not follow:
            break
        if res["state"] in ("Succeeded", "Failed", "Cancelled") and not any(i["text"] for i in res["items"]):
            break  # ended, and everything it wrote has been printed
        time.sleep(0.5)


@delete_app.command("job")
def delete_job(name: str, purge: Annotated[bool, typer.Option(help="remove a finished job")] = False) -> None:
    """Cancel a job (its tasks are stopped), or purge a finished one."""
    res = _guard(_client().delete, f"/jobs/{name}", params={"purge": purge})
    out.print(f"job/{name} purged" if res.get("purged") else f"job/{name} cancellation requested ({res['state']})")


@delete_app.command("deployment")
def delete_deployment(name: str) -> None:
    """Delete a deployment: it leaves the gateway, its replicas drain and stop."""
    res = _guard(_client().delete, f"/deployments/{name}")
    out.print(f"deployment/{name} deleting ({res['ready']} replica(s) draining)")


cost_app = typer.Typer(help="What the pool cost and who used it.", no_args_is_help=True)
app.add_typer(cost_app, name="cost")


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise _fail(f"cannot read the duration {text!r}", "write it as 30m, 12h or 7d") from None


@cost_app.command("report")
def cost_report(since: Annotated[str, typer.Option(help="window: 30m, 12h, 7d")] = "7d") -> None:
    """GPU-hours and cost per team, queue and job from node prices (on-demand and spot), and idle cost."""
    res = _guard(_client().get, "/cost", params={"since_seconds": _seconds(since)})
    for title, key in (("TEAM", "byTeam"), ("QUEUE", "byQueue"), ("JOB", "byJob")):
        _table([title, "GPU-HOURS", "COST", "OF WHICH SPOT"],
               [[k, f"{v['gpuHours']:.2f}", f"{v['cost']:.2f}", f"{v['spotCost']:.2f}"] for k, v in res[key].items()])
    out.print(f"pool {res['poolCost']:.2f}, used {res['usedCost']:.2f}, idle {res['idleCost']:.2f} "
              f"(prices per node-hour from the cluster file)")
    _storage_section(res.get("storage") or {})


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.3f}"


def _storage_section(st: dict[str, Any]) -> None:
    """Storage per tier and team: what the configured sources hold now, priced per GB-month."""
    out.print("\n[bold]Storage[/bold] (bytes held now, for the whole window)", highlight=False)
    prices = st.get("prices", {})
    _table(["TIER", "LOGICAL-GB", "STORED-GB", "GB-MONTHS", "$/GB-MONTH", "COST"],
           [[k, _gib(v["logicalBytes"]), _gib(v["storedBytes"]), f"{v['gbMonths']:.4f}",
             f"{prices.get(k, 0):g}", f"{v['cost']:.2f}"] for k, v in st.get("byTier", {}).items()])
    _table(["TEAM", "STORED-GB", "COST"],
           [[k, _gib(v["storedBytes"]), f"{v['cost']:.2f}"] for k, v in st.get("byTeam", {}).items()])
    _table(["DATASET", "TIER", "TEAM", "STORED-GB", "COST"],
           [[escape(d["dataset"]), d["tier"], escape(d["team"]), _gib(d["storedBytes"]), f"{d['cost']:.2f}"]
            for d in st.get("byDataset", [])[:20]])
    if not st.get("byTier") and not st.get("errors"):
        out.print("no storage measured: set storage_sources (e.g. MODELPLANE_STORAGE_SOURCES='[\"ec=/data/ec\"]')",
                  highlight=False)
    for e in st.get("errors", []):
        err.print(f"[yellow]storage:[/yellow] {escape(e)}", highlight=False)
    total = st.get("total", {})
    out.print(f"storage {total.get('cost', 0):.2f} for {_gib(total.get('storedBytes', 0))} GB stored", highlight=False)


@cluster_app.command("import")
def cluster_import(
    file: Annotated[Path | None, typer.Argument(help="a cluster file (kind: Cluster)")] = None,
    kubeconfig: Annotated[Path | None, typer.Option(help="read the nodes of a Kubernetes cluster")] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context")] = None,
    ray: Annotated[str | None, typer.Option("--ray", help="read the nodes of a Ray cluster at this address")] = None,
) -> None:
    """Import nodes and queues from a cluster file, or the nodes of a Kubernetes or Ray cluster."""
    if sum(x is not None for x in (file, kubeconfig, ray)) != 1:
        raise _fail("give exactly one source", "a cluster FILE, --kubeconfig PATH or --ray ADDRESS")
    cordon: list[str] = []
    if file is not None:
        doc = _load_docs(file)[0]
    else:
        specs = _guard(_engine_nodes, kubeconfig, context, ray)
        doc = {"apiVersion": "modelplane/v1", "kind": "Cluster",
               "spec": {"nodes": [spec.model_dump(mode="json", by_alias=True, exclude_none=True)
                                  for spec, _ in specs], "queues": []}}
        cordon = [spec.name for spec, state in specs if state not in ("Ready", None)]
    client = _client()
    res = _guard(client.post, "/cluster/import", json=doc)
    for name in cordon:  # not schedulable in the engine: not schedulable here either
        _guard(client.post, f"/nodes/{name}/cordon")
    out.print(f"imported {len(res['nodes'])} node(s) and {len(res['queues'])} queue(s)"
              + (f"; cordoned {', '.join(cordon)}" if cordon else ""))


def _engine_nodes(kubeconfig: Path | None, context: str | None, ray: str | None) -> list[tuple[Any, str | None]]:
    """(NodeSpec, state) of every node a Kubernetes or Ray cluster reports."""
    if kubeconfig is not None:
        from modelplane.backends.k8s_import import import_from_cluster

        return [(n.spec, n.state.value) for n in import_from_cluster(str(kubeconfig), context)]
    from modelplane.backends.base import create_backend

    backend: Any = create_backend("ray", address=ray)
    return [(spec, None) for spec in backend.import_nodes()]


def _register_command_groups() -> None:
    """Command groups that live in their own modules (one job each), added when present."""
    import importlib

    for module in ("modelplane.cli_security", "modelplane.cli_sim", "modelplane.cli_data", "modelplane.cli_plan",
                   "modelplane.cli_models",
                   "modelplane.cli_lineage", "modelplane.cli_agent"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(app)


_register_command_groups()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
