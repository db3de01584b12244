"""Allocated vs idle devices over the last hours, as line charts: a page of its own, and a fragment the
pool page loads under its table. Drawn from the API process's in-memory samples."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from modelplane.api.app import AppState, get_state
from modelplane.api.console.charts import Series, line_chart
from modelplane.api.console.middleware import PREFIX
from modelplane.api.console.routes import pages, render
from modelplane.api.console.utilization import Sample, UtilizationHistory
from modelplane.api.security import Rule, add_rules

State = Annotated[AppState, Depends(get_state)]
Hours = Annotated[float, Query(gt=0, le=12, description="how far back to draw")]

_node = Rule("read", lambda ctx: {"type": "Node", "id": "*"})  # what the pool page shows, so who may see it
add_rules({("GET", PREFIX + "/utilization"): _node, ("GET", PREFIX + "/utilization/chart"): _node})


def history(app: FastAPI) -> UtilizationHistory:
    found: UtilizationHistory = app.state.console_utilization
    return found


def install(app: FastAPI) -> None:
    """One history per app, sampled on the server's own tick while it runs."""
    app.state.console_utilization = hist = UtilizationHistory()
    app.router.on_startup.append(lambda: hist.start(app.state.modelplane.store, app.state.modelplane.store.clock))
    app.router.on_shutdown.append(hist.stop)


MIN_SPAN_S = 300.0


def charts(samples: list[Sample], since: float, until: float, per_model: bool = True) -> list[tuple[str, Markup]]:
    """The whole pool first, then (``per_model``) one chart per accelerator model when there are several.
    The x axis starts at the first sample when the history is shorter than the window (a server that
    started a minute ago has a minute to show), but spans at least five minutes."""
    if samples:
        since = max(since, min(samples[0].t, until - MIN_SPAN_S))
    models = sorted({m for s in samples for m in s.total})
    out = []
    for model in [None, *models] if per_model and len(models) > 1 else [None]:
        series = [Series("allocated", "allocated", [(s.t, s.used(model)) for s in samples]),
                  Series("idle", "idle", [(s.t, s.idle(model)) for s in samples])]
        out.append((model or "all accelerators",
                    line_chart(series, since=since, until=until, y_label="devices",
                               testid=f"utilization-{model or 'all'}")))
    return out


def _context(request: Request, state: AppState, hours: float, per_model: bool = True) -> dict[str, Any]:
    hist = history(request.app)
    now = state.store.clock()
    since = now - hours * 3600
    samples = hist.view(state.store, now, since)
    now = max(now, samples[-1].t)  # the server's tick may have sampled a moment after `now` was read
    return {"charts": charts(samples, since, now, per_model), "hours": hours, "count": len(samples),
            "interval": hist.interval_s}


@pages.get("/utilization")
def utilization(request: Request, state: State, hours: Hours = 6) -> HTMLResponse:
    return render(request, "utilization.html", **_context(request, state, hours))


@pages.get("/utilization/chart")
def utilization_chart(request: Request, state: State, hours: Hours = 6, models: bool = True) -> HTMLResponse:
    return render(request, "_utilization_chart.html", **_context(request, state, hours, models))
