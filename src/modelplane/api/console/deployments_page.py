"""Deployments: replicas ready and desired, load, and latency over time, as the gateway saw them.

The history is the API process's own (``DeploymentGateway.history``: one point per refresh, an hour
deep), so a page served by another API process shows what that one routed; the table reads the store.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from modelplane.api.app import AppState, get_state
from modelplane.api.console.charts import Series, line_chart
from modelplane.api.console.middleware import PREFIX
from modelplane.api.console.routes import Team, pages, render
from modelplane.api.routes.deployments import DeploymentGateway, LoadPoint
from modelplane.api.security import Rule, add_rules, team_listing

State = Annotated[AppState, Depends(get_state)]
Minutes = Annotated[float, Query(gt=0, le=60, description="how far back to draw")]

# Who sees what: as the jobs page and the deployments API (a member sees the team's own).
add_rules({("GET", PREFIX + "/deployments"): Rule("read", team_listing("Job")),
           ("GET", PREFIX + "/deployments/charts"): Rule("read", team_listing("Job"))})


def charts(points: list[LoadPoint], since: float, until: float, name: str) -> list[tuple[str, Markup]]:
    """Replicas (ready vs desired), load (requests in flight and waiting, requests per second), and
    the gateway's moving-average answer time."""
    def series(label: str, css: str, value: Any) -> Series:
        return Series(label, css, [(p.t, float(value(p))) for p in points])

    return [
        ("replicas", line_chart([series("ready", "allocated", lambda p: p.ready),
                                 series("desired", "idle", lambda p: p.desired)],
                                since=since, until=until, y_label="replicas", testid=f"replicas-{name}")),
        ("load", line_chart([series("requests/s", "allocated", lambda p: p.rps),
                             series("in flight", "idle", lambda p: p.in_flight),
                             series("waiting", "waiting", lambda p: p.waiting)],
                            since=since, until=until, y_label="requests", testid=f"load-{name}")),
        ("latency", line_chart([series("answer time (ms, moving average)", "allocated", lambda p: p.latency_ms)],
                               since=since, until=until, y_label="ms", testid=f"latency-{name}")),
    ]


def _context(request: Request, state: AppState, team: str | None, minutes: float) -> dict[str, Any]:
    serving: DeploymentGateway | None = getattr(request.app.state, "deployment_gateway", None)
    until = time.time()
    since = until - minutes * 60
    items = []
    for d in state.store.list_deployments(team=team):
        points = [p for p in (serving.history.get(d.name, ()) if serving else ()) if p.t >= since]
        if points:
            since_d = max(since, min(points[0].t, until - 120))  # a young history is drawn at its own scale
        else:
            since_d = since
        items.append({"d": d, "ready": len(d.status.get("endpoints", [])), "load": d.load,
                      "events": list(d.status.get("events", []))[-8:],
                      "charts": charts(points, since_d, until, d.name), "points": len(points)})
    return {"items": items, "minutes": minutes}


@pages.get("/deployments")
def deployments(request: Request, state: State, team: Team = None, minutes: Minutes = 15) -> HTMLResponse:
    return render(request, "deployments.html", **_context(request, state, team, minutes))


@pages.get("/deployments/charts")
def deployment_charts(request: Request, state: State, team: Team = None, minutes: Minutes = 15) -> HTMLResponse:
    return render(request, "_deployment_charts.html", **_context(request, state, team, minutes))
