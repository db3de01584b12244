"""Node agents against a real ``modelplane up`` (API, scheduler, job controller, local backend).

Each agent heartbeats its node through the API, runs and supervises the node's peer-memory
redis-server and publishes its URL; jobs get the URLs of the nodes they run on and checkpoint
into them; a spot interruption notice from the (local, protocol-exact) metadata server drains the
node, and the training job on it checkpoints, moves and finishes without spending a restart.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import torch
import yaml

from modelplane.agent.node_agent import NodeAgent
from modelplane.agent.peers import PEER_MEMORY_LABEL
from modelplane.agent.redis_tier import PeerMemoryServer
from modelplane.agent.spot import notice_source
from modelplane.client import Client
from modelplane.obs.metrics import REGISTRY
from tests.agent.conftest import Metadata, start_metadata
from tests.integration.conftest import REPO, Server, make_server

pytestmark = pytest.mark.integration

PY = sys.executable
NODES = ("spot-a", "spot-b")


def _cluster(path: Path) -> Path:
    nodes = [{"name": n, "cpu": "16", "memory": "64Gi", "spot": True, "pricePerHour": 1.0,
              "accelerators": {"model": "NVIDIA-T4", "count": 1}, "topology": {"group": "g0", "switch": "s0"}}
             for n in NODES]
    doc = {"apiVersion": "modelplane/v1", "kind": "Cluster", "metadata": {"name": "spot"},
           "spec": {"nodes": nodes, "queues": [{"name": "training", "kind": "training", "quota": {"*": 100}}]}}
    path.write_text(yaml.safe_dump(doc))
    return path


def _start(tmp_path: Path, **env: str) -> Server:
    s = make_server(tmp_path)
    s.cluster_file = _cluster(tmp_path / "cluster.yaml")
    s.env.update({"MODELPLANE_RESTART_BACKOFF": "0", **env})
    return s.start()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """The platform with its own peer-memory tier off: the node agents below provide it."""
    s = _start(tmp_path, MODELPLANE_PEER_MEMORY="false")
    yield s
    s.stop()


class RunningAgent:
    def __init__(self, agent: NodeAgent) -> None:
        self.agent = agent
        self.stop = threading.Event()
        self.thread = threading.Thread(target=agent.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.agent.close()


@pytest.fixture
def agents(server: Server, tmp_path: Path) -> Iterator[Callable[..., RunningAgent]]:
    started: list[RunningAgent] = []

    def start(node: str, spot: str = "none", metadata_url: str = "") -> RunningAgent:
        agent = NodeAgent(Client(server.url, server.token), node,
                          peer=PeerMemoryServer(tmp_path / "agents" / node, maxmemory="64mb"),
                          notice=notice_source(spot, metadata_url), heartbeat_interval_s=0.2,
                          notice_interval_s=0.2)
        agent.check_node()
        started.append(RunningAgent(agent))
        return started[-1]

    yield start
    for a in started:
        a.close()


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def node_label(api: httpx.Client, node: str) -> str | None:
    labels: dict[str, str] = api.get(f"/nodes/{node}").json()["spec"].get("labels", {})
    return labels.get(PEER_MEMORY_LABEL)


def job_doc(name: str, command: list[str], replicas: int, **template: Any) -> dict[str, Any]:
    return {"apiVersion": "modelplane/v1", "kind": "TrainingJob", "metadata": {"name": name},
            "spec": {"queue": "training", "replicas": replicas, "restartPolicy": {"maxRestarts": 2},
                     "template": {"command": command, "env": {"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1",
                                                              **template.pop("env", {})},
                                  "resources": {"cpu": "1", "memory": "1Gi", "accelerators": 1,
                                                "acceleratorModel": "NVIDIA-T4"}, **template}}}


def job_state(api: httpx.Client, name: str, *states: str) -> dict[str, Any] | None:
    job: dict[str, Any] = api.get(f"/jobs/{name}").json()
    if job["state"] in ("Failed", "Cancelled") and job["state"] not in states:
        events = api.get(f"/jobs/{name}/events").json()
        raise AssertionError(f"job {name} ended {job['state']}: {job.get('message')} {events}")
    return job if job["state"] in states else None


def logs(api: httpx.Client, name: str, rank: int) -> str:
    return str(api.get(f"/jobs/{name}/logs", params={"rank": rank}).json()["items"][0]["text"])


# The job side of the tier, as a training process uses it: its own copy through PeerMemoryTier
# into the URLs the platform handed it, read back from the same peer.
MIRROR = """
import os
from modelplane.train.peer_memory import PeerMemoryTier, urls_from_env
rank = int(os.environ["RANK"])
tier = PeerMemoryTier(urls_from_env(), "test:agent")
tier.put(rank, 7, {"shard.pt": f"rank {rank} weights".encode()})
copy = tier.fetch(rank)
print("node", os.environ["MODELPLANE_NODE"], "peer", tier.peer_url(rank), "step", copy.step,
      "data", copy.files["shard.pt"].decode(), flush=True)
"""


def test_agents_publish_their_redis_and_jobs_checkpoint_into_the_next_nodes(
        server: Server, agents: Callable[..., RunningAgent]):
    running = {n: agents(n) for n in NODES}
    with server.client() as api:
        for n, a in running.items():
            assert wait_for(f"{n}'s URL", lambda n=n, a=a: node_label(api, n) == a.agent.peer.url)
            assert api.get(f"/nodes/{n}").json()["state"] == "Ready"
        api.post("/jobs", json=job_doc("mirror", [PY, "-c", MIRROR], replicas=2)).raise_for_status()
        job = wait_for("mirror to succeed", lambda: job_state(api, "mirror", "Succeeded"))
        urls = {n: a.agent.peer.url for n, a in running.items()}
        for a in job["placement"]:
            own, other = a["node"], next(n for n in NODES if n != a["node"])
            line = logs(api, "mirror", a["rank"])
            # rank r's copy lives on the other node's Redis, never on its own node
            assert f"node {own} peer {urls[other]} step 7 data rank {a['rank']} weights" in line, line
            stored = redis.Redis.from_url(urls[other]).get(f"test:agent:r{a['rank']}:latest")
            assert stored is not None and stored.startswith(b"7:")
            assert redis.Redis.from_url(urls[own]).get(f"test:agent:r{a['rank']}:latest") is None


def _restarts() -> float:
    return REGISTRY.get_sample_value("modelplane_peer_memory_restarts_total") or 0.0


def test_a_killed_redis_is_restarted_at_the_url_the_node_publishes(server: Server,
                                                                  agents: Callable[..., RunningAgent]):
    a = agents("spot-a")
    peer = a.agent.peer
    assert peer is not None
    with server.client() as api:
        wait_for("the URL", lambda: node_label(api, "spot-a") == peer.url)
        redis.Redis.from_url(peer.url).set("probe", b"1")
        before, pid = _restarts(), peer.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        wait_for("a new redis-server", lambda: peer.pid not in (None, pid) and peer.answers())
        # the agent counts the restart right after the new server answers: wait for the count
        wait_for("the restart to be counted", lambda: _restarts() >= before + 1)
        assert _restarts() == before + 1
        assert redis.Redis.from_url(peer.url).get("probe") is None  # memory only: the copy is gone
        assert node_label(api, "spot-a") == peer.url
    a.close()
    with server.client() as api:
        assert node_label(api, "spot-a") is None  # a stopped agent withdraws its URL


@pytest.mark.parametrize("provider", ["aws", "gcp"])
def test_spot_notice_checkpoints_and_moves_the_training_job_without_a_restart(
        provider: str, server: Server, agents: Callable[..., RunningAgent], tmp_path: Path):
    clouds: dict[str, tuple[Metadata, Any]] = {n: start_metadata() for n in NODES}
    try:
        for n in NODES:
            agents(n, spot=provider, metadata_url=clouds[n][0].url)
        out = tmp_path / "result.pt"
        cmd = [PY, str(REPO / "examples" / "train_resumable.py"), "--steps", "24", "--save-every", "3",
               "--step-delay", "0.1", "--out", str(out)]
        before = REGISTRY.get_sample_value("modelplane_spot_interruption_notices_total", {"provider": provider}) or 0
        with server.client() as api:
            api.post("/jobs", json=job_doc("spot", cmd, replicas=1,
                                           env={"MODELPLANE_HEARTBEAT_INTERVAL_S": "0.5"})).raise_for_status()
            job = wait_for("training to pass step 6", lambda: (j := job_state(api, "spot", "Running")) and
                           " step 6 loss" in logs(api, "spot", 0) and j)
            first = job["placement"][0]["node"]
            clouds[first][0].announce()
            wait_for(f"{first} to drain", lambda: api.get(f"/nodes/{first}").json()["state"] == "Draining")
            # the first attempt saves at its next step boundary and exits (its log, before the relaunch)
            stopped = wait_for("the first attempt to checkpoint and stop",
                               lambda: re.search(r"rank 0 stopped at step (\d+)", logs(api, "spot", 0)))
            job = wait_for("the job to finish", lambda: job_state(api, "spot", "Succeeded"), timeout=120)
            events = [(e["to"], e["reason"]) for e in api.get("/jobs/spot/events").json()["items"]]
            metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {server.token}"}).text
        assert job["placement"][0]["node"] != first and job["restarts"] == 0
        assert (None, "SpotInterruption") in events
        moved = events.index(("Preempted", "NodeDraining"))
        assert events.index((None, "SpotInterruption")) < moved
        assert ("Pending", "Requeued") in events[moved:] and ("Running", "Started") in events[moved:]
        result = torch.load(out)
        assert result["step"] == 24 and not result["preempted"]
        assert result["resumed_from"] == int(stopped.group(1)) >= 6  # from the checkpoint taken on the notice
        assert REGISTRY.get_sample_value("modelplane_spot_interruption_notices_total",
                                         {"provider": provider}) == before + 1
        assert 'modelplane_node_drains_total{reason="SpotInterruption"} 1.0' in metrics
    finally:
        for _md, srv in clouds.values():
            srv.shutdown()
            srv.server_close()


def test_up_runs_the_pool_tier_and_the_node_agent_cli_takes_over_a_node(tmp_path: Path):
    server = _start(tmp_path)  # peer memory on, as `make up` runs it
    try:
        with server.client() as api:
            pool_url = wait_for("the pool's URL", lambda: node_label(api, "spot-a"))
            assert node_label(api, "spot-b") == pool_url
            assert redis.Redis.from_url(pool_url).ping()
            api.post("/jobs", json=job_doc("pool", [PY, "-c", MIRROR], replicas=2)).raise_for_status()
            wait_for("pool job", lambda: job_state(api, "pool", "Succeeded"))
            assert f"peer {pool_url} step 7" in logs(api, "pool", 0)

            env = dict(server.env, MODELPLANE_TOKEN=server.token)
            proc = subprocess.Popen([PY, "-m", "modelplane", "node-agent", "--node", "spot-a", "--api", server.url,
                                     "--heartbeat-interval", "0.2", "--state-dir", str(tmp_path / "cli-agent")],
                                    cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                own = wait_for("the agent's URL", lambda: (u := node_label(api, "spot-a")) != pool_url and u)
                assert redis.Redis.from_url(own).ping()
                assert node_label(api, "spot-b") == pool_url  # the control plane does not take it back
            finally:
                proc.send_signal(signal.SIGTERM)
                output = proc.communicate(timeout=30)[0].decode()
            assert proc.returncode == 0, output
            # withdrawn at exit; the control plane's tier covers the node again
            assert wait_for("the pool's URL again", lambda: node_label(api, "spot-a") == pool_url)
    finally:
        server.stop()


def test_bad_input_is_refused_with_the_fix_cli_and_api(server: Server):
    env = dict(server.env, MODELPLANE_TOKEN=server.token)
    for args, expected in ((["--node", "nope"], "node 'nope' is not registered"),
                           (["--node", "spot-a", "--spot-notice", "azure"], "unknown spot notice provider"),
                           (["--node", "spot-a", "--heartbeat-interval", "0"], "must be positive")):
        r = subprocess.run([PY, "-m", "modelplane", "node-agent", "--api", server.url, "--no-peer-memory", *args],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and expected in r.stderr and "Traceback" not in r.stderr, r.stderr
    with server.client() as api:
        r = api.patch("/nodes/spot-a/labels", json={"labels": {"bad key!": "x"}})
        assert r.status_code == 422 and "labels" in r.text
        r = api.post("/nodes/spot-a/drain", json={"reason": "not camel case"})
        assert r.status_code == 422
        assert api.get("/nodes/spot-a").json()["state"] == "Ready"
        r = api.patch("/nodes/spot-a/labels", json={"labels": {"team": "x", "gone": None}})
        assert r.status_code == 200 and r.json()["spec"]["labels"]["team"] == "x"
        assert api.patch("/nodes/missing/labels", json={"labels": {}}).status_code == 404
    anonymous = httpx.patch(f"{server.url}/api/v1/nodes/spot-a/labels", json={"labels": {PEER_MEMORY_LABEL: "x"}})
    assert anonymous.status_code == 401  # publishing a URL is a write on the node: the agent's token is checked
