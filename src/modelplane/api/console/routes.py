"""Console pages. Guarded pages read through the same functions as the API's routes (team scoping
included); the login form checks credentials with the same identity service and audit trail."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

import yaml
from fastapi import APIRouter, Body, Depends, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from modelplane.api.app import AppState, get_state
from modelplane.api.console.middleware import PREFIX, ConsoleSessions, session_id
from modelplane.api.console.pool import pool_by_model
from modelplane.api.console.sessions import COOKIE, IDLE_S, Session, SessionStore
from modelplane.api.routes import audit as audit_routes
from modelplane.api.routes import jobs as job_routes
from modelplane.api.routes.queues import queue_views
from modelplane.api.security import ApiSecurity, audit_public, guard, request_context, source_ip, team_scope
from modelplane.core.errors import InvalidSpec, ModelplaneError
from modelplane.core.job import ACTIVE, TERMINAL, JobState
from modelplane.security.errors import AuthenticationFailed

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.filters["utc"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(t))) if t else ""
State = Annotated[AppState, Depends(get_state)]
Team = Annotated[str | None, Depends(team_scope)]
LOG_TAIL = 64 * 1024
LINEAGE_NODES = 200  # per direction: a page, not a dump; the CLI and API give more

pages = APIRouter(prefix=PREFIX, dependencies=[Depends(guard)], include_in_schema=False)
public = APIRouter(prefix=PREFIX, include_in_schema=False)


def _sec(request: Request) -> ApiSecurity:
    sec: ApiSecurity = request.app.state.security
    return sec


def _sessions(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.console_sessions
    return store


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    _, rs = request_context(request)
    who = rs.admitted.principal if rs.admitted else None
    return templates.TemplateResponse(request, name, {"who": who, "prefix": PREFIX, **ctx}, status_code=status)


# --------------------------------------------------------------------------- login
def _login_page(request: Request, error: str = "", status: int = 200, next_url: str = PREFIX) -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"who": None, "prefix": PREFIX, "error": error,
                                                              "next": next_url}, status_code=status)


def _safe_next(raw: str) -> str:
    return raw if raw.startswith(PREFIX) and not raw.startswith("//") else PREFIX


@public.get("/login")
def login_form(request: Request, next: str = PREFIX) -> HTMLResponse:
    return _login_page(request, next_url=_safe_next(next))


@public.post("/login")
async def login(request: Request) -> Response:
    """An API key, or name + password (+ TOTP code): checked and audited as the API's own login."""
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
    sec, rs = request_context(request)
    now, next_url = time.time(), _safe_next(form.get("next", PREFIX))
    try:
        if form.get("api_key"):
            principal = sec.authenticator.authenticate(form["api_key"].strip(), now)
            session = Session(form["api_key"].strip(), principal.id)
            audit_public(request, principal.id, "succeeded", f"Identity/{principal.id}", {"stage": "console-login"})
        elif form.get("name"):
            code = form.get("totp_code") or None
            if code is not None and not code.isdigit():
                raise AuthenticationFailed("the TOTP code is 6 to 8 digits", hint="type the code from your app")
            pair = sec.gate(rs.sink).login(sec.identities, form["name"], form.get("password", ""), now=now,
                                           request_id=rs.request_id, source_ip=source_ip(request), totp_code=code)
            session = Session(pair.access_token, pair.principal.id, pair.refresh_token, pair.expires_at)
        else:
            return _login_page(request, "enter an API key, or a user name and password", 400, next_url)
    except AuthenticationFailed as exc:
        if form.get("api_key"):
            audit_public(request, "unknown", "denied", "Identity/api-key", {"stage": "console-login"})
        return _login_page(request, f"{exc.message}. {exc.hint}".strip(), 401, next_url)
    sid = _sessions(request).create(session, now)
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(COOKIE, sid, max_age=IDLE_S, path=PREFIX, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@public.post("/logout")
def logout(request: Request) -> Response:
    sid = session_id({k.lower(): v for k, v in request.headers.items()})
    session = _sessions(request).drop(sid) if sid else None
    if session is not None and session.refresh_token:
        with contextlib.suppress(AuthenticationFailed):  # already expired or revoked: nothing to revoke
            _sec(request).identities.logout(session.credential, session.refresh_token, time.time())
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response


# --------------------------------------------------------------------------- pages
@pages.get("")
def pool(request: Request, state: State) -> HTMLResponse:
    store = state.store
    nodes = {n.name: n.to_node() for n in store.list_nodes()}
    active, _ = store.list_jobs(states=sorted(ACTIVE), limit=100_000)
    models = pool_by_model(nodes, [j.placement for j in active if j.placement])
    return render(request, "pool.html", models=models, nodes=sorted(nodes.values(), key=lambda n: n.name))


@pages.get("/queues")
def queues(request: Request, state: State, team: Team = None) -> HTMLResponse:
    views = [v for v in queue_views(state.store) if team is None or v["team"] == team]
    pending, _ = state.store.list_jobs(states=[JobState.PENDING], team=team, limit=1000)
    waiting: dict[str, list[Any]] = {}
    for j in pending:
        waiting.setdefault(j.queue, []).append(j)
    return render(request, "queues.html", queues=views, waiting=waiting)


@pages.get("/jobs")
def jobs(request: Request, state: State, team: Team = None) -> HTMLResponse:
    items, _ = state.store.list_jobs(team=team, limit=500)
    items = sorted(items, key=lambda j: j.created_at, reverse=True)
    return render(request, "jobs.html", jobs=items)


@pages.get("/jobs/{name}")
def job(request: Request, name: str, state: State) -> HTMLResponse:
    return render(request, "job.html", **_job_context(state, name))


@pages.get("/jobs/{name}/status")
def job_status(request: Request, name: str, state: State) -> HTMLResponse:
    return render(request, "_job_status.html", **_job_context(state, name))


@pages.get("/jobs/{name}/logs")
def job_logs(request: Request, name: str, state: State) -> HTMLResponse:
    record = state.store.get_job(name)
    logs = []
    if state.log_reader is not None:
        for task in state.store.list_tasks(record.id):
            text, _ = state.log_reader.read_logs(record.id, task.rank, 0)
            logs.append((task.rank, text[-LOG_TAIL:]))
    return render(request, "_logs.html", job=record, logs=logs, done=record.state in TERMINAL,
                  no_reader=state.log_reader is None)


def _job_context(state: AppState, name: str) -> dict[str, Any]:
    view = job_routes.job_view(state, state.store.get_job(name), detail=True)
    return {"job": view, "done": JobState(view["state"]) in TERMINAL}


@pages.get("/submit")
def submit_form(request: Request) -> HTMLResponse:
    return render(request, "submit.html")


@pages.post("/jobs")
def submit(request: Request, state: State, response: Response,
           body: Annotated[dict[str, Any], Body()]) -> HTMLResponse:
    """The pasted YAML goes through the API's own apply (validation, priority, idempotent re-apply)."""
    text = body.get("manifest", "")
    try:
        doc = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"the manifest is not valid YAML: {exc}".splitlines()[0],
                          hint="check indentation and quoting", field="manifest") from None
    if not isinstance(doc, dict):
        raise InvalidSpec("the manifest must be a YAML mapping", hint="start with 'apiVersion: modelplane/v1'",
                          field="manifest")
    created = job_routes.apply_job(state, response, doc, None)
    out = render(request, "_submitted.html", job=created, status=response.status_code or 201)
    out.headers["HX-Redirect"] = f"{PREFIX}/jobs/{created['name']}"
    return out


@pages.get("/audit")
def audit(request: Request, offset: int = -1) -> HTMLResponse:
    sec = _sec(request)
    size = sec.log.size
    start = max(size - 50, 0) if offset < 0 else min(offset, size)
    listing = audit_routes.list_entries(sec, offset=start, limit=50)
    return render(request, "audit.html", entries=list(reversed(listing["items"])), size=size, start=start)


@pages.post("/audit/verify")
def audit_verify(request: Request) -> HTMLResponse:
    return render(request, "_verify.html", report=audit_routes.verify(_sec(request)))


@pages.get("/lineage")
def lineage(request: Request, q: str = "", kind: str = "", name: str = "", namespace: str = "",
            depth: str = "3") -> HTMLResponse:
    """Search the lineage graph; for one dataset or model, its upstream and downstream as trees."""
    from modelplane.api.routes.lineage import lineage_of, node_view, walk_view
    from modelplane.data.lineage import NODE_KINDS
    from modelplane.data.lineage_tree import walk_tree

    ctx: dict[str, Any] = {"q": q, "kind": kind, "node_name": name, "namespace": namespace, "depth": depth,
                           "kinds": NODE_KINDS, "results": None, "node": None, "trees": []}
    try:
        store = lineage_of(request)
        if name and kind:
            hops = int(depth) if depth.strip().isdigit() else -1
            start = store.locate(kind, name, namespace or None)
            ctx["node"] = node_view(start)
            for direction in ("upstream", "downstream"):
                hits = store.walk(start.id, direction, depth=hops, limit=LINEAGE_NODES)
                view = walk_view(store, start, direction, hits, hops, edges=True)
                ctx["trees"].append((direction, walk_tree(view["node"], view["items"], view["edges"], direction),
                                     len(hits) >= LINEAGE_NODES))
        elif q or kind:
            ctx["results"] = [node_view(n) for n in store.search(kind=kind or None, name=q or None, limit=100)]
    except ModelplaneError as exc:
        return render(request, "lineage.html", exc.status_code, error=exc, **ctx)
    return render(request, "lineage.html", **ctx)


def mount_console(app: FastAPI) -> None:
    """Add the console to the API app (call after its other middleware: the session one must be outermost)."""
    app.state.console_sessions = SessionStore()
    # Their pages join `pages` when imported, so they must be imported before it is included.
    from modelplane.api.console import cost_page, deployments_page, utilization_page  # noqa: F401

    app.include_router(public)
    app.include_router(pages)
    utilization_page.install(app)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="console-static")
    app.add_middleware(ConsoleSessions, sessions=app.state.console_sessions)
