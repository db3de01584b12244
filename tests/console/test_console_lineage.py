"""The console's lineage page: search box, a node's upstream and downstream as nested trees drawn on
the server, errors on the page itself, and the same Cedar rule as the API's lineage reads."""

from __future__ import annotations

import json
import re

from modelplane.data.openlineage_events import run_event, to_json
from tests.console.test_console_pages import World, world  # noqa: F401  (the signed-in console fixture)


def record(w: World) -> None:
    api = w.api()
    for ev, kind in [
        (run_event(job="prep", inputs=[("s3://raw", "a"), ("s3://raw", "b")], outputs=[("s3://ds", "clean")]), "pipeline"),
        (run_event(job="train", inputs=[("s3://ds", "clean")], outputs=[("models", "llm:1")]), "training"),
        (run_event(job="chat", inputs=[("models", "llm:1")]), "deployment"),
    ]:
        r = api.post("/api/v1/lineage/events", json=json.loads(to_json(ev)), params={"job_kind": kind})
        assert r.status_code == 201, r.text


def test_search_then_trees_of_a_model(world: World) -> None:  # noqa: F811
    record(world)
    c = world.as_user("ann")  # a member reads the graph, as through the API
    page = c.get("/console/lineage")
    assert page.status_code == 200 and 'name="q"' in page.text and 'href="/console/lineage"' in page.text
    found = c.get("/console/lineage", params={"q": "llm"})
    assert found.status_code == 200 and "1 match" in found.text and 'data-node="model/llm:1"' in found.text
    link = re.search(r'href="(/console/lineage\?kind=model[^"]+)"', found.text)
    assert link is not None
    node = c.get(link.group(1).replace("&amp;", "&"))
    assert node.status_code == 200
    html = node.text
    up = html[html.index('data-direction="upstream"'):html.index('data-direction="downstream"')]
    down = html[html.index('data-direction="downstream"'):]
    assert 'data-node="model/llm:1"' in html[html.index('data-testid="lineage-node"'):html.index("data-direction")]
    for name in ("training/train", "dataset/clean", "pipeline/prep"):
        assert f'data-node="{name}"' in up, name
    assert 'data-node="dataset/a"' not in up  # 4 hops away; the page walks 3 by default
    assert 'data-node="deployment/chat"' in down and "1 hop" in down
    # nesting follows the hops: train's list holds clean, which holds prep
    assert up.index("training/train") < up.index("dataset/clean") < up.index("pipeline/prep")
    assert up.count("<ul>") == 3
    deeper = c.get("/console/lineage", params={"kind": "model", "name": "llm:1", "depth": "5"}).text
    assert 'data-node="dataset/a"' in deeper and 'data-node="dataset/b"' in deeper


def test_unknown_nodes_and_bad_depths_are_explained_on_the_page(world: World) -> None:  # noqa: F811
    record(world)
    c = world.as_admin()
    r = c.get("/console/lineage", params={"kind": "dataset", "name": "nope"})
    assert r.status_code == 404 and "no dataset named" in r.text and 'name="q"' in r.text
    r = c.get("/console/lineage", params={"kind": "model", "name": "llm:1", "depth": "99"})
    assert r.status_code == 400 and "out of range" in r.text and "1..64" in r.text
    r = c.get("/console/lineage", params={"q": "zzz"})
    assert r.status_code == 200 and "no nodes match" in r.text
    assert "&lt;script&gt;" in c.get("/console/lineage", params={"q": "<script>"}).text  # escaped


def test_the_nav_links_the_lineage_page(world: World) -> None:  # noqa: F811
    assert 'href="/console/lineage">Lineage</a>' in world.as_admin().get("/console").text
