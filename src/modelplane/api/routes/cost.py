"""Cost: GPU-hours and money per job, team and queue over a window, the pool's idle cost, and what the
storage tiers cost (measured now, priced per GB-month)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request

from modelplane.api.app import AppState, get_state
from modelplane.core.cost import CostLine, JobUsage, cost_report
from modelplane.core.errors import ModelplaneError
from modelplane.core.storage_cost import StorageLine, StoragePrices, StoredBytes, storage_cost

router = APIRouter(tags=["cost"])
State = Annotated[AppState, Depends(get_state)]
MAX_WINDOW_S = 400 * 86400
BASIS = "bytes held now, for the whole window"


class StorageMeter:
    """Measures the configured storage sources, at most once per ``ttl_s`` (walking a bucket is not
    free, and the console page may be reloaded often); a source that cannot be read is reported, not
    fatal: the GPU part of the report stays useful."""

    def __init__(self, sources: Sequence[str], prices: Mapping[str, float], *,
                 storage_options: Mapping[str, Any] | None = None, ttl_s: float = 30.0) -> None:
        self.sources = list(sources)
        self.prices = dict(prices)
        self.storage_options = dict(storage_options or {})
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cached: tuple[float, list[StoredBytes], list[str]] | None = None

    @classmethod
    def from_settings(cls) -> StorageMeter:
        from modelplane.settings import Settings

        s = Settings()
        return cls(s.storage_sources, s.storage_prices)

    def measure(self) -> tuple[float, list[StoredBytes], list[str]]:
        from modelplane.data.storage_usage import measure, parse_sources

        with self._lock:
            now = time.time()
            if self._cached is not None and now - self._cached[0] < self.ttl_s:
                return self._cached
            items: list[StoredBytes] = []
            errors: list[str] = []
            try:
                sources = parse_sources(self.sources)
            except ModelplaneError as exc:
                sources, errors = [], [f"{exc.message} ({exc.hint})"]
            for src in sources:
                try:
                    items += measure([src], self.storage_options)
                except ModelplaneError as exc:
                    errors.append(f"{src.kind}={src.url}: {exc.message} ({exc.hint})")
            self._cached = (now, items, errors)
            return self._cached


def storage_meter(app: FastAPI) -> StorageMeter:
    """The app's meter (tests set ``app.state.storage_meter``); from the settings otherwise."""
    meter = getattr(app.state, "storage_meter", None)
    if meter is None:
        meter = app.state.storage_meter = StorageMeter.from_settings()
    return meter


def _line(c: CostLine) -> dict[str, float]:
    return {"gpuHours": round(c.gpu_hours, 4), "cost": round(c.cost, 4), "spotCost": round(c.spot_cost, 4)}


def _sline(c: StorageLine) -> dict[str, float]:
    return {"logicalBytes": c.logical_bytes, "storedBytes": c.stored_bytes, "gbMonths": round(c.gb_months, 6),
            "cost": round(c.cost, 4)}


def storage_view(meter: StorageMeter, seconds: float) -> dict[str, Any]:
    measured_at, items, errors = meter.measure()
    try:
        prices = StoragePrices.with_overrides(meter.prices)
    except ModelplaneError as exc:
        return {"measuredAt": measured_at, "basis": BASIS, "prices": {}, "byTier": {}, "byTeam": {},
                "byDataset": [], "total": _sline(StorageLine()), "errors": [*errors, f"{exc.message} ({exc.hint})"]}
    report = storage_cost(items, prices, seconds)
    return {
        "measuredAt": measured_at,
        "basis": BASIS,
        "prices": dict(prices.per_gb_month),
        "byTier": {k: _sline(v) for k, v in sorted(report.by_tier.items())},
        "byTeam": {k: _sline(v) for k, v in sorted(report.by_team.items())},
        "byDataset": [{"tier": t, "dataset": d, "team": team, **_sline(v)}
                      for (t, d, team), v in sorted(report.by_dataset.items(), key=lambda kv: -kv[1].cost)],
        "total": _sline(report.total),
        "errors": errors,
    }


def cost_view(state: AppState, meter: StorageMeter, since_seconds: float) -> dict[str, Any]:
    store = state.store
    until = store.clock()
    since = until - since_seconds
    nodes = {n.name: n.to_node() for n in store.list_nodes()}
    jobs, _ = store.list_jobs(limit=1_000_000)
    usages = [JobUsage(j.id, j.name, j.team, j.queue, j.placement, j.started_at, j.finished_at)
              for j in jobs if j.placement is not None and j.started_at is not None
              and (j.finished_at is None or j.finished_at >= since)]
    report = cost_report(usages, nodes, since, until)
    return {
        "since": since, "until": until,
        "poolCost": round(report.pool_cost, 4), "usedCost": round(report.used_cost, 4),
        "idleCost": round(report.idle_cost, 4),
        "byTeam": {k: _line(v) for k, v in sorted(report.by_team.items())},
        "byQueue": {k: _line(v) for k, v in sorted(report.by_queue.items())},
        "byJob": {k: _line(v) for k, v in sorted(report.by_job.items(), key=lambda kv: -kv[1].cost)},
        "storage": storage_view(meter, since_seconds),
    }


@router.get("/cost")
def cost(state: State, request: Request,
         since_seconds: Annotated[float, Query(gt=0, le=MAX_WINDOW_S)] = 7 * 86400) -> dict[str, Any]:
    """Cost of the last ``since_seconds`` (default 7 days) from node prices and job placements, and of the
    storage tiers named in the ``storage_sources`` setting (priced by ``storage_prices``)."""
    return cost_view(state, storage_meter(request.app), since_seconds)
