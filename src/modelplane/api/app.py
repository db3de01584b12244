"""The FastAPI application: routes, authentication on every call, and errors as JSON with a fix."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelplane import __version__
from modelplane.api.security import ApiSecurity, audit_middleware, guard, security_for
from modelplane.backends.base import Backend
from modelplane.core.errors import ModelplaneError
from modelplane.obs.metrics import HTTP_REQUESTS, install_store_collector
from modelplane.obs.security_metrics import SecurityCollector
from modelplane.store import Store

log = logging.getLogger("modelplane.api")


class AppState:
    """What handlers need: the store, and a backend used only to read task logs."""

    def __init__(self, store: Store, log_reader: Backend | None) -> None:
        self.store = store
        self.log_reader = log_reader


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.modelplane
    return state


def _error(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(status_code=status, content=body)


def create_app(store: Store, log_reader: Backend | None = None,
               extra_routers: list[Callable[[], APIRouter]] | None = None,
               *, security: ApiSecurity | None = None, lineage: Any = None) -> FastAPI:
    """``security`` defaults to this store's ``security_for(store)`` (keys under Settings().home);
    ``lineage`` (a ``data.lineage.LineageStore``) to the platform's, opened on first use."""
    from modelplane.api.routes import audit, cluster, cost, identities, jobs, nodes, policies, queues
    from modelplane.api.routes import auth as auth_routes
    from modelplane.api.routes import deployments as deployment_routes
    from modelplane.api.routes import lineage as lineage_routes
    from modelplane.api.routes import models as model_routes

    app = FastAPI(
        title="modelplane",
        version=__version__,
        description="Train and serve large models on one shared pool of heterogeneous accelerators. "
        "Every call but /healthz and the credential exchanges under /api/v1/auth needs "
        "'Authorization: Bearer <access token or API key>' and is authorized by Cedar policy.",
    )
    app.state.modelplane = AppState(store, log_reader)
    app.state.lineage = lineage
    sec = security or security_for(store)
    app.state.security = sec
    app.router.on_shutdown.append(sec.checkpoint_now)  # a last signed checkpoint on a clean stop

    @app.exception_handler(ModelplaneError)
    async def _mp_error(_: Request, exc: ModelplaneError) -> JSONResponse:
        return _error(exc.status_code, exc.to_dict())

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        path = ".".join(loc) or "(body)"
        return _error(422, {"error": "InvalidRequest", "message": f"{path}: {err.get('msg')}", "field": path,
                            "hint": "see the OpenAPI document at /docs for the expected shape"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        hint = "see /docs for the API's routes" if exc.status_code in (404, 405) else ""
        return _error(exc.status_code, {"error": "HTTPError", "message": str(exc.detail), "hint": hint})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, {"error": "InternalError", "message": f"internal error: {type(exc).__name__}",
                            "hint": "this is a bug in modelplane; the server log has the details"})

    registry = install_store_collector(store)
    registry.register(SecurityCollector(sec))

    @app.middleware("http")
    async def _timing(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await audit_middleware(request, call_next)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        HTTP_REQUESTS.labels(request.method, path, str(response.status_code)).observe(time.perf_counter() - start)
        return response

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse, dependencies=[Depends(guard)])
    def metrics() -> Response:
        """Prometheus metrics (scrape with a bearer token: zero trust covers metrics too)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["health"], response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    auth = [Depends(guard)]
    for module in (nodes, queues, jobs, cluster, audit, identities, policies, auth_routes, cost, lineage_routes):
        app.include_router(module.router, prefix="/api/v1", dependencies=auth)
    app.include_router(deployment_routes.router, prefix="/api/v1", dependencies=auth)
    app.include_router(model_routes.router, prefix="/api/v1", dependencies=auth)
    deployment_routes.install_gateway(app, store)  # the gateway behind /deployments/{name}/infer
    app.include_router(auth_routes.public_router, prefix="/api/v1")
    from modelplane.api.routes import datasets as dataset_routes

    # sensitive datasets and node attestations; key release checks the job's own credential
    app.include_router(dataset_routes.router, prefix="/api/v1", dependencies=auth)
    app.include_router(dataset_routes.public_router, prefix="/api/v1")
    for make in extra_routers or []:
        app.include_router(make(), prefix="/api/v1", dependencies=auth)

    @app.get("/api/v1/version", tags=["health"], dependencies=auth)
    def version() -> dict[str, str]:
        return {"version": __version__, "database": store.dialect}

    from modelplane.api.console import mount_console

    mount_console(app)  # last: its session middleware must wrap the others

    return app
