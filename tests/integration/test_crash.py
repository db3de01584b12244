"""kill -9 of `modelplane up` in the middle of a burst of submissions, then a restart.

Every job the API acknowledged with a 2xx must still be there, none duplicated, none stuck.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.conftest import fresh_postgres_url
from tests.helpers import training_doc
from tests.integration.conftest import make_server

pytestmark = pytest.mark.integration


def burst(url: str, token: str, acked: list[str], stop: threading.Event, prefix: str) -> None:
    with httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=5) as c:
        i = 0
        while not stop.is_set():
            name = f"{prefix}-{i}"
            doc = training_doc(name, queue="batch", replicas=1, accelerators=0,
                               command=["python", "-c", "import time; time.sleep(0.2)"])
            try:
                r = c.post("/jobs", json=doc, headers={"Idempotency-Key": name})
                if r.status_code in (200, 201):
                    acked.append(name)
            except httpx.HTTPError:
                pass  # the server died mid-request: not acknowledged, so nothing is promised
            i += 1


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_kill_9_during_submissions_loses_nothing(tmp_path, request, database):
    url = None
    if database == "postgresql":
        url = fresh_postgres_url(request.getfixturevalue("postgres_server"))
    server = make_server(tmp_path, url).start()
    acked: list[str] = []
    stop = threading.Event()
    try:
        threads = [threading.Thread(target=burst, args=(server.url, server.token, acked, stop, f"w{k}"))
                   for k in range(4)]
        for t in threads:
            t.start()
        deadline = time.time() + 30
        while len(acked) < 40 and time.time() < deadline:
            time.sleep(0.05)
        server.kill9()
        stop.set()
        for t in threads:
            t.join()
        assert len(acked) >= 20, "the burst acknowledged too few jobs to test anything"
        server.start()
        with server.client() as c:
            names: list[str] = []
            after = None
            while True:
                page = c.get("/jobs", params={"limit": 500, **({"after": after} if after else {})}).json()
                names += [j["name"] for j in page["items"]]
                after = page["next"]
                if not after:
                    break
            assert len(names) == len(set(names)), "a job was duplicated"
            missing = set(acked) - set(names)
            assert not missing, f"acknowledged jobs lost: {sorted(missing)[:5]}"
            # None stuck: every job reaches an end state after the restart.
            deadline = time.time() + 240
            while time.time() < deadline:
                jobs = c.get("/jobs", params={"limit": 1000, "state": ["Pending", "Admitted", "Running",
                                                                          "Recovering", "Preempted"]}).json()
                if not jobs["items"]:
                    break
                time.sleep(1)
            assert not jobs["items"], f"jobs stuck after restart: {[(j['name'], j['state']) for j in jobs['items']][:5]}"
            failed = c.get("/jobs", params={"state": "Failed", "limit": 1000}).json()["items"]
            assert all(j["reason"] in ("TaskFailed", "TaskLost", "NodeLost") for j in failed), failed[:3]
    finally:
        stop.set()
        server.stop()
