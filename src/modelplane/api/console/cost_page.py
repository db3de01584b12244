"""The cost page: GPU-hours, cost, spot share and idle cost per team and queue, and storage per tier,
as bars over a window the reader picks. It renders the API's own ``/cost`` view (same numbers as
``modelplane cost report``) and is authorized like it: the platform team's page."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from modelplane.api.app import AppState, get_state
from modelplane.api.console.charts import BarRow, Segment, bar_chart
from modelplane.api.console.middleware import PREFIX
from modelplane.api.console.routes import pages, render
from modelplane.api.routes.cost import MAX_WINDOW_S, cost_view, storage_meter
from modelplane.api.security import Rule, add_rules
from modelplane.core.errors import InvalidSpec
from modelplane.core.storage_cost import TIERS

State = Annotated[AppState, Depends(get_state)]
WINDOWS = ("1h", "24h", "7d", "30d")
UNITS = {"m": 60, "h": 3600, "d": 86400}

add_rules({("GET", PREFIX + "/cost"): Rule("read", lambda ctx: {"type": "Quota", "id": "cost"})})


def parse_window(text: str) -> float:
    """'30m', '12h', '7d' (or seconds) to seconds, within what the cost route accepts."""
    raw = text.strip()
    try:
        seconds = float(raw[:-1]) * UNITS[raw[-1]] if raw and raw[-1] in UNITS else float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_WINDOW_S:
        raise InvalidSpec(f"cannot use {text!r} as a window", field="since",
                          hint="write a duration such as 30m, 12h or 7d, at most 400d")
    return seconds


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # unreachable: TiB returns above


def money(x: float) -> str:
    return f"${x:,.2f}" if x >= 0.01 or x == 0 else f"${x:.4f}"


def _gpu_rows(lines: dict[str, dict[str, float]]) -> list[BarRow]:
    rows = []
    for name, v in sorted(lines.items(), key=lambda kv: -kv[1]["cost"]):
        on_demand = v["cost"] - v["spotCost"]
        rows.append(BarRow(name, (Segment(on_demand, "ondemand", f"on-demand {money(on_demand)}"),
                                  Segment(v["spotCost"], "spot", f"spot {money(v['spotCost'])}")),
                           money(v["cost"])))
    return rows


def charts(view: dict[str, Any]) -> dict[str, Any]:
    storage = view["storage"]
    idle = BarRow("pool", (Segment(view["usedCost"], "ondemand", f"used {money(view['usedCost'])}"),
                           Segment(view["idleCost"], "idle", f"idle {money(view['idleCost'])}")),
                  money(view["poolCost"]))
    tiers = [BarRow(t, (Segment(storage["byTier"][t]["cost"], f"tier-{t}", money(storage["byTier"][t]["cost"])),),
                    money(storage["byTier"][t]["cost"])) for t in TIERS if t in storage["byTier"]]
    teams = [BarRow(k, (Segment(v["cost"], "storage", money(v["cost"])),), money(v["cost"]))
             for k, v in sorted(storage["byTeam"].items(), key=lambda kv: -kv[1]["cost"])]
    return {
        "teams": bar_chart(_gpu_rows(view["byTeam"]), testid="cost-by-team"),
        "queues": bar_chart(_gpu_rows(view["byQueue"]), testid="cost-by-queue"),
        "idle": bar_chart([idle], testid="cost-idle"),
        "tiers": bar_chart(tiers, testid="storage-by-tier"),
        "storage_teams": bar_chart(teams, testid="storage-by-team"),
    }


@pages.get("/cost")
def cost_page(request: Request, state: State, since: str = "7d") -> HTMLResponse:
    seconds = parse_window(since)
    view = cost_view(state, storage_meter(request.app), seconds)
    return render(request, "cost.html", view=view, since=since, windows=WINDOWS, charts=charts(view),
                  human_bytes=human_bytes, money=money, tiers=TIERS)
