"""The console's cost page (GPU cost per team and queue, spot share, idle cost, storage per tier, as SVG
bars over a chosen window) and the utilization charts (allocated vs idle devices over time, from the
API process's ring buffer), in process against a real store, a real EC store and the real guard."""

from __future__ import annotations

import html
import math
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from modelplane.api.app import create_app
from modelplane.api.console.charts import BarRow, Segment, Series, bar_chart, line_chart, nice_scale
from modelplane.api.console.utilization import UtilizationHistory
from modelplane.api.routes.cost import StorageMeter
from modelplane.api.security import ApiSecurity, KindAwareRiskScorer, bootstrap_admin
from modelplane.core.job import JobState
from modelplane.core.placement import Placement, TaskAssignment
from modelplane.data.ecstore import ErasureCodedStore
from modelplane.data.erasure import ErasureProfile
from modelplane.security.risk import RiskConfig
from modelplane.store import Store
from tests.helpers import training_doc

PASSWORD = "correct horse battery"
SVG = "{http://www.w3.org/2000/svg}"
T0 = 1_800_000_000.0
CLUSTER = {
    "apiVersion": "modelplane/v1", "kind": "Cluster",
    "spec": {
        "nodes": [{"name": "a100-0", "accelerators": {"model": "NVIDIA-A100", "count": 8}, "cpu": "64",
                   "memory": "512Gi", "pricePerHour": 32.0},
                  {"name": "a100-spot", "accelerators": {"model": "NVIDIA-A100", "count": 8}, "cpu": "64",
                   "memory": "512Gi", "pricePerHour": 8.0, "spot": True},
                  {"name": "mi-0", "accelerators": {"model": "AMD-MI250", "count": 4}, "cpu": "64",
                   "memory": "512Gi", "pricePerHour": 16.0}],
        "queues": [{"name": "qa", "kind": "training", "team": "a", "quota": {"NVIDIA-A100": 16}},
                   {"name": "qb", "kind": "training", "team": "b", "quota": {"NVIDIA-A100": 16}}],
    },
}


@dataclass
class World:
    app: Any
    store: Store
    clock: dict[str, float]
    admin_key: str
    storage: Path

    def client(self) -> TestClient:
        return TestClient(self.app, raise_server_exceptions=False, client=("10.0.0.1", 40000),
                          follow_redirects=False)

    def signed_in(self, **form: str) -> TestClient:
        c = self.client()
        assert c.post("/console/login", data=form).status_code == 303
        return c

    def admin(self) -> TestClient:
        return self.signed_in(api_key=self.admin_key)

    def api(self) -> TestClient:
        c = self.client()
        c.headers["Authorization"] = f"Bearer {self.admin_key}"
        return c

    def run_job(self, name: str, team: str, queue: str, node: str, devices: int, start: float, end: float | None):
        doc = training_doc(name, queue=queue, replicas=1)
        doc["metadata"]["team"] = team
        self.clock["t"] = start
        job = self.store.create_job(doc)
        p = Placement(job.id, (TaskAssignment("worker", 0, 0, node, 1000, 1024, tuple(range(devices)), 1000),))
        self.store.transition_job(job.id, JobState.ADMITTED, "Scheduled", placement=p)
        self.store.transition_job(job.id, JobState.RUNNING, "Started")
        if end is not None:
            self.clock["t"] = end
            self.store.transition_job(job.id, JobState.SUCCEEDED, "Completed")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = {"t": T0}
    store = Store(f"sqlite:///{tmp_path / 'modelplane.db'}")
    store.clock = lambda: clock["t"]
    sec = ApiSecurity(store, tmp_path, fast_hashing=True,
                      risk=KindAwareRiskScorer(RiskConfig(no_device_points=0, odd_hour_points=0, new_source_points=0)))
    app = create_app(store, security=sec)
    storage = tmp_path / "storage"
    (storage / "ssd/teams/a/features").mkdir(parents=True)
    (storage / "ssd/teams/a/features/part-0").write_bytes(b"f" * 300_000)
    ec = ErasureCodedStore.at_root(storage / "ec", ErasureProfile(k=4, m=2, stripe_size=64 * 1024), durable=False)
    ec.put("teams/b/corpus/shard-0", b"c" * 400_000)
    app.state.storage_meter = StorageMeter([f"hot={storage / 'ssd'}", f"ec={storage / 'ec'}"], {"hot": 0.1})
    w = World(app, store, clock, bootstrap_admin(sec, time.time()) or "", storage)
    api = w.api()
    assert api.post("/api/v1/cluster/import", json=CLUSTER).status_code == 200
    assert api.post("/api/v1/teams", json={"name": "a"}).status_code == 201
    r = api.post("/api/v1/users", json={"name": "ann", "team": "a", "role": "member", "password": PASSWORD})
    assert r.status_code == 201, r.text
    # team a: 4 on-demand GPUs for 2 h (ended 1 h ago); team b: 2 spot GPUs, running for the last 3 h
    w.run_job("train-a", "a", "qa", "a100-0", 4, T0 - 3 * 3600, T0 - 3600)
    w.run_job("train-b", "b", "qb", "a100-spot", 2, T0 - 3 * 3600, None)
    clock["t"] = T0
    yield w
    sec.close()
    store.close()


def svg(page: str, testid: str) -> ET.Element:
    start = page.index(f'data-testid="{testid}"')
    start = page.rindex("<svg", 0, start)
    return ET.fromstring(page[start: page.index("</svg>", start) + 6])


def row(page: str, attr: str, name: str) -> list[str]:
    """The cells of the table row ``<tr data-ATTR="NAME">``, as text."""
    found = re.search(rf'<tr data-{attr}="{re.escape(name)}">(.*?)</tr>', page, re.S)
    return [] if found is None else [html.unescape(c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", found[1], re.S)]


def bar_widths(chart: ET.Element) -> dict[str, dict[str, float]]:
    return {g.get("data-label", ""): {r.get("class", ""): float(r.get("width", 0))
                                      for r in g.iter(SVG + "rect") if r.get("class") != "track"}
            for g in chart.iter(SVG + "g")}


def test_cost_page_draws_gpu_cost_spot_share_idle_and_storage(world: World) -> None:
    page = world.admin().get("/console/cost", params={"since": "24h"})
    assert page.status_code == 200, page.text
    text = page.text
    # team a: 4 GPUs x 2 h on the $32/8-GPU node = $32; team b: 2 GPUs x 3 h on the $8 spot node = $6
    teams = bar_widths(svg(text, "cost-by-team"))
    assert set(teams) == {"a", "b"}
    assert teams["a"]["ondemand"] == pytest.approx(teams["b"]["spot"] * 32 / 6, rel=0.01)
    assert "spot" not in teams["a"] and "ondemand" not in teams["b"]  # zero-width segments are not drawn
    assert row(text, "name", "b") == ["b", "6.00", "$6.00", "$6.00", "100%"]
    assert row(text, "name", "qa") == ["qa", "8.00", "$32.00", "$0.00", "0%"]
    # the pool (32 + 8 + 16 per hour) for 24 h, minus what the jobs paid, is idle
    assert 'data-testid="idle-cost">$1,306.00<' in text
    idle = bar_widths(svg(text, "cost-idle"))["pool"]
    assert idle["idle"] / idle["ondemand"] == pytest.approx(1306 / 38, rel=0.01)
    # storage: the SSD dataset at the overridden $0.10, the EC store on raw bytes (parity included)
    tiers = bar_widths(svg(text, "storage-by-tier"))
    assert set(tiers) == {"hot", "ec"}
    ec = row(text, "tier", "ec")
    assert ec[:2] == ["ec", "390.6 KiB"] and ec[4] == "$0.045"  # logical 400 kB; priced per raw GB-month
    assert "$0.1" in text and "$0.045" in text and "teams/b/corpus" in text
    assert set(bar_widths(svg(text, "storage-by-team"))) == {"a", "b"}
    assert 'href="/console/cost"' in text and 'href="/console/utilization"' in text  # nav links


def test_the_window_selector_changes_what_is_counted(world: World) -> None:
    c = world.admin()
    day = c.get("/console/cost", params={"since": "24h"}).text
    hour = c.get("/console/cost", params={"since": "1h"}).text
    assert 'data-name="a"' in day and 'data-name="a"' not in hour  # train-a ended before the last hour
    assert row(hour, "name", "b")[:2] == ["b", "2.00"]
    assert '<option value="1h" selected>' in hour
    custom = c.get("/console/cost", params={"since": "90m"}).text
    assert '<option value="90m" selected>' in custom
    for bad in ("soon", "0h", "500d"):
        r = c.get("/console/cost", params={"since": bad})
        assert r.status_code == 422 and "30m, 12h or 7d" in r.text and "<html" in r.text, bad


def test_the_cost_route_and_page_agree_and_members_are_refused(world: World) -> None:
    body = world.api().get("/api/v1/cost", params={"since_seconds": 86400}).json()
    assert body["byTeam"]["a"]["cost"] == 32.0 and body["byTeam"]["b"]["spotCost"] == 6.0
    st = body["storage"]
    assert st["byTier"]["hot"]["storedBytes"] == 300_000 and st["byTeam"]["a"]["storedBytes"] == 300_000
    ec = st["byTier"]["ec"]
    assert ec["logicalBytes"] == 400_000 and ec["storedBytes"] >= 600_000 and st["prices"]["hot"] == 0.1
    assert st["byTier"]["hot"]["cost"] == pytest.approx(300_000 / 2**30 * 0.1 * 24 / 730, abs=1e-4)
    member = world.signed_in(name="ann", password=PASSWORD)
    assert member.get("/console/cost").status_code == 403
    assert member.get("/console/utilization").status_code == 200  # the pool is everyone's to see


def test_a_storage_source_that_cannot_be_read_is_reported_not_fatal(world: World) -> None:
    world.app.state.storage_meter = StorageMeter([f"ec={world.storage / 'nowhere'}", "tape=/x"], {"hot": -1})
    page = world.admin().get("/console/cost")
    assert page.status_code == 200 and 'data-testid="storage-error"' in page.text
    assert "KIND=URL" in page.text and 'data-name="a"' in page.text  # GPU part intact
    st = world.api().get("/api/v1/cost").json()["storage"]
    assert any("storage tier" in e or ">= 0" in e for e in st["errors"]) and st["byTier"] == {}


def points(chart: ET.Element, series: str) -> list[tuple[float, float]]:
    line = next(p for p in chart.iter(SVG + "polyline") if p.get("data-series") == series)
    return [(float(x), float(y)) for x, y in (pt.split(",") for pt in (line.get("points") or "").split())]


def test_utilization_charts_follow_the_samples_in_memory(world: World) -> None:
    hist: UtilizationHistory = world.app.state.console_utilization
    c = world.admin()
    # the first view samples now: 2 of 24 A100s and 0 of 4 MI250s allocated
    page = c.get("/console/utilization", params={"hours": 1}).text
    assert 'data-samples="1"' in page
    world.run_job("burst", "a", "qa", "a100-0", 8, T0 + 600, None)
    hist.sample_store(world.store, T0 + 600)
    world.clock["t"] = T0 + 1200
    frag = c.get("/console/utilization/chart", params={"hours": 1}).text
    assert 'data-samples="3"' in frag  # stale by the tick: the view took a third sample
    chart = svg(frag, "utilization-all")
    alloc, idle = points(chart, "allocated"), points(chart, "idle")
    assert [x for x, _ in alloc] == sorted(x for x, _ in alloc) and len(alloc) == 3
    assert alloc[0][0] == 48.0  # 20 minutes of history: drawn from the first sample, not from an hour ago
    assert alloc[0][1] > alloc[1][1] == alloc[2][1]  # 2 -> 10 devices: higher up (smaller y)
    assert idle[0][1] < idle[1][1]  # 26 idle -> 18 idle
    assert 'data-testid="utilization-NVIDIA-A100"' in frag and 'data-testid="utilization-AMD-MI250"' in frag
    # within the tick a view draws the pool as it is now, but keeps nothing: reloads cannot flood the buffer
    world.run_job("more", "b", "qb", "a100-spot", 8, T0 + 1210, None)
    frag = c.get("/console/utilization/chart", params={"hours": 1}).text
    assert 'data-samples="4"' in frag and len(hist.samples()) == 3
    assert points(svg(frag, "utilization-all"), "allocated")[-1][1] < alloc[-1][1]  # 10 -> 18 allocated
    assert c.get("/console/utilization", params={"hours": 13}).status_code == 422
    assert 'hx-get="/console/utilization/chart?hours=6&amp;models=false"' in c.get("/console").text
    small = c.get("/console/utilization/chart", params={"hours": 6, "models": "false"}).text
    assert small.count("<svg") == 1 and 'data-testid="utilization-all"' in small


def test_the_ring_buffer_is_bounded_and_ordered() -> None:
    from modelplane.api.console.pool import ModelDevices, NodeDevices

    hist = UtilizationHistory(capacity=3, interval_s=30)
    for i in range(5):
        hist.record(T0 + i, [ModelDevices("nvidia", "A100", [NodeDevices("n", "A100", 8, i, "Ready")])])
    assert [s.used() for s in hist.samples()] == [2, 3, 4] and hist.capacity == 3
    assert [s.t for s in hist.samples(since=T0 + 3)] == [T0 + 3, T0 + 4]
    hist.record(T0, [])  # the clock stepped back: start over rather than draw a line backwards
    assert [s.t for s in hist.samples()] == [T0]


@given(st.floats(1e-6, 1e9))
def test_a_y_axis_covers_the_data_in_at_most_five_readable_steps(x: float) -> None:
    top, step = nice_scale(x)
    assert top >= x * (1 - 1e-9) and round(top / step) <= 5 and top - step < x
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
    assert min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-6


def test_charts_scale_escape_and_clip() -> None:
    got = [nice_scale(x) for x in (0, 0.3, 4, 7, 12, 26, 101)]
    assert got == [pytest.approx(p) for p in [(1, 1), (0.3, 0.1), (4, 1), (8, 2), (15, 5), (30, 10), (150, 50)]]
    bars = bar_chart([BarRow("<script>x</script>", (Segment(3, "a"), Segment(1, "b"))),
                      BarRow("half", (Segment(2, "a"),))], width=400, label_w=100, note_w=100)
    tree = ET.fromstring(str(bars))
    widths = bar_widths(tree)
    assert widths["<script>x</script>"] == {"a": 150.0, "b": 50.0} and widths["half"] == {"a": 100.0}
    assert "<script>" not in str(bars)
    lines = ET.fromstring(str(line_chart([Series("s", "allocated", [(0, 1), (50, 4), (200, 9)])],
                                         since=0, until=100, width=148, height=138)))
    pts = points(lines, "s")
    assert pts == [(48.0, 89.5), (92.0, 22.0)]  # the sample after the window is left out; y top is 4
