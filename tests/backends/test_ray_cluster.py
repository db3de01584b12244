"""The Ray backend against a real multi-node Ray cluster started on this machine by `ray start`.

One head node (``node-a``, one logical A100) and one worker (``node-b``, CPU only) are shared by
the module; the node-death tests add nodes of their own and kill them (SIGKILL to the node's
raylet, agents, workers and tasks, by pid: ``backends.ray_local_cluster``; never ``ray stop``,
which would end every Ray on the machine). The cluster runs without PYTHONPATH: the task runner
reaches the workers by value, as on a cluster without modelplane installed.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelplane.backends.base import FINISHED_PHASES, TaskLaunch, TaskPhase, TaskStatus, create_backend
from modelplane.backends.ray_local_cluster import RAY_INSTALL_HINT, LocalRayCluster, ray_command

WAIT_SECONDS = 90.0  # generous: two cores shared by many; no test asserts how long anything took
RayCluster = LocalRayCluster


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.fail(f"the Ray backend tests need Ray: {RAY_INSTALL_HINT}", pytrace=False)
    try:
        ray_bin = ray_command()
    except Exception as exc:
        pytest.fail(str(exc), pytrace=False)
    cluster = RayCluster(ray_bin, state_dir=str(tmp_path_factory.mktemp("ray-state")))
    try:
        cluster.start_head(
            {"node_a": 1, "accelerator_type:A100": 1},
            {"modelplane.io/node-name": "node-a", "modelplane.io/topology-switch": "sw-1"},
            num_gpus=1,
        )
        cluster.connect()
        cluster.add_worker({"node_b": 1}, {"modelplane.io/node-name": "node-b"})
        yield cluster
    finally:
        cluster.teardown()


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def task(job_id: str, rank: int, world: int, node: str, code: str, **kwargs: object) -> TaskLaunch:
    return TaskLaunch(
        job_id=job_id,
        job_name=f"{job_id}-name",
        pod_set="main",
        index=rank,
        rank=rank,
        world_size=world,
        node=node,
        command=["python", "-c", code],
        **kwargs,
    )  # type: ignore[arg-type]


def wait_done(backend: object, job_id: str, statuses: list[TaskStatus]) -> list[TaskStatus]:
    box = [statuses]

    def done() -> bool:
        box[0] = backend.poll(job_id, box[0])  # type: ignore[attr-defined]
        return all(s.phase in FINISHED_PHASES for s in box[0])

    wait_for(done, f"job {job_id} to finish")
    return box[0]


ENV_DUMP = (
    "import json, os, sys\n"
    "keys = ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'MODELPLANE_NODE',\n"
    "        'MODELPLANE_RAY_NODE_ID', 'MODELPLANE_RAY_NODE_IP', 'CUDA_VISIBLE_DEVICES', 'HIP_VISIBLE_DEVICES', 'MODELPLANE_DATABASE_URL']\n"
    "print(json.dumps({k: os.environ.get(k) for k in keys}))\n"
    "print('caf\\u00e9 done', flush=True)\n"
    "sys.exit(int(os.environ['RANK']) * 3)\n"
)


def test_import_nodes_reads_the_ray_inventory(ray_cluster: RayCluster) -> None:
    backend = create_backend("ray", address=ray_cluster.address, state_dir=ray_cluster.state_dir)
    specs = {s.name: s for s in backend.import_nodes()}  # type: ignore[attr-defined]
    assert set(specs) >= {"node-a", "node-b"}
    a, b = specs["node-a"], specs["node-b"]
    assert a.accelerators is not None and a.accelerators.model == "A100" and a.accelerators.count == 1
    assert b.accelerators is None
    assert a.labels["resources.ray.io/node_a"] == "1" and "resources.ray.io/node_a" not in b.labels
    assert a.topology.switch == "sw-1" and b.topology.switch == "default"
    assert a.labels["modelplane.io/ray-node-id"] == ray_cluster.nodes[0].node_id
    assert a.cpu == "1000m"


def test_two_rank_job_runs_one_rank_per_chosen_node(ray_cluster: RayCluster) -> None:
    backend = create_backend("ray", address=ray_cluster.address, state_dir=ray_cluster.state_dir)
    tasks = [
        task("job-2r", 0, 2, "node-a", ENV_DUMP, devices=(0,), accelerator_model="A100"),
        task("job-2r", 1, 2, "node-b", ENV_DUMP, env={"EXTRA": "1"}),
    ]
    statuses = backend.launch(tasks)
    assert [s.rank for s in statuses] == [0, 1]
    assert all(s.handle.startswith("ray:modelplane/") for s in statuses)
    final = wait_done(backend, "job-2r", statuses)
    assert [(s.phase, s.exit_code) for s in final] == [(TaskPhase.SUCCEEDED, 0), (TaskPhase.FAILED, 3)]
    envs = []
    for rank in (0, 1):
        text, offset = backend.read_logs("job-2r", rank, 0)
        assert "café done" in text and offset == len(text.encode())
        envs.append(json.loads(text.splitlines()[0]))
    # Asserted from inside the tasks: each rank ran on the Ray node the placement named.
    assert envs[0]["MODELPLANE_RAY_NODE_ID"] == ray_cluster.nodes[0].node_id
    assert envs[1]["MODELPLANE_RAY_NODE_ID"] == ray_cluster.nodes[1].node_id
    assert [e["RANK"] for e in envs] == ["0", "1"] and {e["WORLD_SIZE"] for e in envs} == {"2"}
    assert [e["NODE_RANK"] for e in envs] == ["0", "1"] and {e["LOCAL_RANK"] for e in envs} == {"0"}
    assert {e["MASTER_ADDR"] for e in envs} == {envs[0]["MODELPLANE_RAY_NODE_IP"]}  # rank 0's Ray node IP
    assert envs[0]["CUDA_VISIBLE_DEVICES"] == "0" and envs[1]["CUDA_VISIBLE_DEVICES"] == ""
    assert envs[0]["MODELPLANE_NODE"] == "node-a" and envs[0]["MODELPLANE_DATABASE_URL"] is None
    # Logs stay readable from the control plane's copy after the actors are gone.
    fresh = create_backend("ray", address=ray_cluster.address, state_dir=ray_cluster.state_dir)
    assert "café done" in fresh.read_logs("job-2r", 1, 0)[0]
    assert fresh.read_logs("job-2r", 1, 5)[0] == backend.read_logs("job-2r", 1, 0)[0].encode()[5:].decode()


def test_restarted_backend_readopts_and_stop_ends_the_job(ray_cluster: RayCluster, tmp_path: Path) -> None:
    backend = create_backend("ray", address=ray_cluster.address, state_dir=ray_cluster.state_dir)
    go = tmp_path / "go"
    code = f"import os, time\nprint('waiting', flush=True)\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
    statuses = backend.launch([task("job-stop", 0, 1, "node-b", code)])
    assert statuses[0].phase is TaskPhase.RUNNING
    wait_for(lambda: "waiting" in backend.read_logs("job-stop", 0, 0)[0], "the task to print")
    # A new backend instance (as after a control-plane restart) finds the detached actor by its handle.
    fresh = create_backend("ray", address=ray_cluster.address, state_dir=ray_cluster.state_dir)
    assert fresh.poll("job-stop", statuses)[0].phase is TaskPhase.RUNNING
    fresh.stop("job-stop", grace_seconds=1.0)
    final = fresh.poll("job-stop", statuses)
    assert final[0].phase is TaskPhase.FAILED and final[0].message.startswith("stopped on request")
    assert final[0].exit_code == 128 + signal.SIGTERM


def test_bad_command_fails_with_the_reason(ray_cluster: RayCluster) -> None:
    backend = create_backend("ray", address=ray_cluster.address, state_dir=ray_cluster.state_dir)
    bad = TaskLaunch(
        job_id="job-bad",
        job_name="bad",
        pod_set="main",
        index=0,
        rank=0,
        world_size=1,
        node="node-a",
        command=["no-such-program-xyz"],
    )
    status = backend.launch([bad])[0]
    assert status.phase is TaskPhase.FAILED and status.exit_code == 127
    assert "no-such-program-xyz" in status.message
    final = backend.poll("job-bad", [status])
    assert final[0].phase is TaskPhase.FAILED


def test_a_node_ray_does_not_have_makes_the_job_lost(ray_cluster: RayCluster) -> None:
    backend = create_backend("ray", address=ray_cluster.address, state_dir=ray_cluster.state_dir)
    statuses = backend.launch(
        [task("job-nowhere", 0, 2, "node-a", "print(1)"), task("job-nowhere", 1, 2, "node-zz", "print(1)")]
    )
    assert [s.phase for s in statuses] == [TaskPhase.LOST, TaskPhase.LOST]  # nothing half-started
    assert "node-zz" in statuses[0].message
    assert backend.alive_node_names()[:2] == ["node-a", "node-b"]  # type: ignore[attr-defined]


def test_killing_a_ray_node_makes_its_task_lost(ray_cluster: RayCluster, tmp_path: Path) -> None:
    victim = ray_cluster.add_worker({"node_c": 1}, {"modelplane.io/node-name": "node-c"})
    backend = create_backend("ray", address=ray_cluster.address, state_dir=ray_cluster.state_dir)
    code = "import time\nprint('up', flush=True)\ntime.sleep(600)\n"
    statuses = backend.launch(
        [task("job-kill", 0, 2, "node-a", code), task("job-kill", 1, 2, "node-c", code)]
    )
    assert [s.phase for s in statuses] == [TaskPhase.RUNNING, TaskPhase.RUNNING]
    wait_for(lambda: "up" in backend.read_logs("job-kill", 1, 0)[0], "rank 1 to start")
    assert backend.poll("job-kill", statuses)[1].phase is TaskPhase.RUNNING
    victim.kill()
    box = [statuses]

    def rank1_gone() -> bool:
        box[0] = backend.poll("job-kill", box[0])
        return box[0][1].phase is TaskPhase.LOST

    wait_for(rank1_gone, "rank 1 to be reported lost")
    assert box[0][0].phase is TaskPhase.RUNNING  # the surviving rank is untouched until the controller acts
    assert "up" in backend.read_logs("job-kill", 1, 0)[0]  # the log copied before the node died survives
    backend.stop("job-kill", grace_seconds=0.5)  # what the job controller does on LOST
    final = backend.poll("job-kill", box[0])
    assert final[1].phase is TaskPhase.LOST and final[0].phase is TaskPhase.FAILED
    assert not victim.processes()


def test_job_moves_off_a_killed_ray_node_and_finishes(ray_cluster: RayCluster, tmp_path: Path) -> None:
    """The whole loop on Ray: scheduler, job controller, node health fed by Ray's inventory."""
    from modelplane.control.base import ReconcileLoop
    from modelplane.control.jobs import JobController
    from modelplane.control.nodes import EmbeddedNodeAgent, NodeHealthController
    from modelplane.control.scheduling import SchedulerController
    from modelplane.core.job import JobState
    from modelplane.core.queue import QueueSpec
    from modelplane.platform import make_scheduler
    from modelplane.store import Store

    ray_cluster.add_worker({"node_d": 1}, {"modelplane.io/node-name": "node-d"})
    backend = create_backend("ray", address=ray_cluster.address, state_dir=tmp_path / "backend")
    store = Store(f"sqlite:///{tmp_path / 'modelplane.db'}")
    try:
        for spec in backend.import_nodes():  # type: ignore[attr-defined]
            store.upsert_node(spec)
        store.upsert_queue(
            QueueSpec.model_validate({"name": "training", "kind": "training", "quota": {"*": 1000}})
        )
        loop = ReconcileLoop(
            [
                SchedulerController(store, make_scheduler("default"), time.time),
                JobController(store, backend, time.time, stop_grace_seconds=1),
                NodeHealthController(store, time.time, timeout_seconds=2),
                EmbeddedNodeAgent(store, backend.alive_node_names),  # type: ignore[attr-defined]
            ]
        )
        marks = tmp_path / "marks"
        marks.mkdir()
        # First run of each rank: mark and hang (until its node dies); after the move: exit 0.
        code = (
            f"import os, pathlib, time\np = pathlib.Path({str(marks)!r}) / os.environ['RANK']\n"
            "first = not p.exists()\np.write_text(os.environ['MODELPLANE_RAY_NODE_ID'])\n"
            "print('rank', os.environ['RANK'], 'on', os.environ['MODELPLANE_NODE'], flush=True)\n"
            "time.sleep(600 if first else 0)\n"
        )
        store.create_job(
            {
                "apiVersion": "modelplane/v1",
                "kind": "TrainingJob",
                "metadata": {"name": "mover"},
                "spec": {
                    "queue": "training",
                    "replicas": 2,
                    "restartPolicy": {"maxRestarts": 3},
                    "template": {
                        "command": ["python", "-c", code],
                        "resources": {"cpu": "100m", "memory": "64Mi"},
                    },
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                "key": "kubernetes.io/hostname",
                                                "operator": "NotIn",
                                                "values": ["node-a"],
                                            }
                                        ]
                                    }
                                ]
                            }
                        }
                    },
                },
            }
        )

        def until(pred: Callable[[Any], bool], what: str) -> Any:
            box: list[Any] = []

            def check() -> bool:
                loop.run_once()
                box[:] = [store.get_job("mover")]
                return pred(box[0])

            wait_for(check, what)
            return box[0]

        job = until(
            lambda j: j.state is JobState.RUNNING and len(list(marks.iterdir())) == 2, "both ranks running"
        )
        victim_name = job.placement.assignments[0].node
        assert victim_name != "node-a"
        victim = ray_cluster.node_named(victim_name)
        killed_at = time.monotonic()
        victim.kill()
        job = until(
            lambda j: (
                j.state is JobState.RUNNING and victim_name not in {a.node for a in j.placement.assignments}
            ),
            "the job to run again elsewhere",
        )
        running_again = time.monotonic() - killed_at
        job = until(lambda j: j.state in (JobState.SUCCEEDED, JobState.FAILED), "the job to end")
        assert job.state is JobState.SUCCEEDED, (job.reason, job.message)
        assert victim_name not in {a.node for a in job.placement.assignments}
        assert {(marks / r).read_text() for r in ("0", "1")} <= {
            n.node_id for n in ray_cluster.nodes if n is not victim
        }
        reasons = [e.reason for e in store.list_events(job.id)]
        assert "Requeued" in reasons and ("NodeLost" in reasons or "TaskLost" in reasons)
        print(f"\nray failover: node kill -> job running again in {running_again:.1f}s")
    finally:
        store.close()


def test_a_placement_ray_cannot_reserve_is_lost_not_stuck(ray_cluster: RayCluster) -> None:
    backend = create_backend(
        "ray",
        address=ray_cluster.address,
        state_dir=ray_cluster.state_dir,
        cpus_per_task=8.0,
        placement_timeout_s=2.0,
    )  # node-a has 1 CPU
    statuses = backend.launch([task("job-full", 0, 1, "node-a", "print(1)")])
    assert statuses[0].phase is TaskPhase.LOST and "could not reserve" in statuses[0].message
    assert backend.poll("job-full", statuses)[0].phase is TaskPhase.LOST


RAY_CLIENT_SCRIPT = """
import json, sys, time
from modelplane.backends.base import FINISHED_PHASES, TaskLaunch, create_backend
backend = create_backend("ray", address=sys.argv[1], state_dir=sys.argv[2])
names = [s.name for s in backend.import_nodes()]
st = backend.launch([TaskLaunch(job_id="job-client", job_name="c", pod_set="main", index=0, rank=0, world_size=1,
                                node="node-a", command=["python", "-c", "import os; print('via client', os.environ['RANK'])"])])
deadline = time.time() + 90
while not all(s.phase in FINISHED_PHASES for s in st) and time.time() < deadline:
    st = backend.poll("job-client", st)
    time.sleep(0.2)
print(json.dumps({"names": names, "phase": st[0].phase.value, "log": backend.read_logs("job-client", 0, 0)[0]}))
"""


RAY_CLIENT_START_FAILURES = ("Starting Ray client server failed", "Initialization failure from server")


def test_ray_client_address_works_too(ray_cluster: RayCluster, tmp_path: Path) -> None:
    """`ray://` (Ray Client) from another process: this one is already a driver of the cluster."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    for _attempt in range(3):
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                RAY_CLIENT_SCRIPT,
                f"ray://127.0.0.1:{ray_cluster.client_port}",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
            check=False,
        )
        # Ray's client proxy starts a server per client; on a loaded 2-core machine that start-up can
        # time out inside Ray ("Starting Ray client server failed") or trip over a process that just
        # exited (psutil.ZombieProcess in the proxier: "Initialization failure from server"). Two
        # retries, for those start-up errors only.
        if proc.returncode == 0 or not any(m in proc.stderr for m in RAY_CLIENT_START_FAILURES):
            break
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "node-a" in out["names"] and out["phase"] == "Succeeded" and out["log"] == "via client 0\n"


# -- tasks reached at their own node's address: certificates and serving ports ------------------------

FAR_IP = (
    "127.0.0.2"  # loopback too, but not the head's: a node whose tasks are dialled at an address of their own
)


@pytest.fixture(scope="module")
def far_node(ray_cluster: RayCluster) -> str:
    """A Ray node at another IP address than the control plane's (127.0.0.1): a task there that is
    dialled at 127.0.0.1, or whose certificate names only 127.0.0.1, fails as on another machine."""
    ray_cluster.add_worker({"node_f": 1}, {"modelplane.io/node-name": "node-f"}, node_ip=FAR_IP)
    return "node-f"


def _control_plane(backend: Any, tmp_path: Path, *, deployments: bool = False) -> tuple[Any, Any]:
    """A store holding the Ray nodes, and the controllers that place and launch jobs on them."""
    from modelplane.control.base import ReconcileLoop
    from modelplane.control.deployments import DeploymentController
    from modelplane.control.jobs import JobController
    from modelplane.control.scheduling import SchedulerController
    from modelplane.core.queue import QueueSpec
    from modelplane.platform import make_scheduler
    from modelplane.store import Store

    store = Store(f"sqlite:///{tmp_path / 'modelplane.db'}")
    for spec in backend.import_nodes():
        store.upsert_node(spec)
    for name in ("training", "inference"):
        store.upsert_queue(QueueSpec.model_validate({"name": name, "kind": "training", "quota": {"*": 1000}}))
    controllers: list[Any] = [
        SchedulerController(store, make_scheduler("default"), time.time),
        JobController(store, backend, time.time, stop_grace_seconds=1),
    ]
    if deployments:
        controllers.insert(
            0,
            DeploymentController(
                store,
                time.time,
                cache_dir=tmp_path / "cache",
                registry_url="",
                stable_s=2.0,
                probe_timeout_s=2.0,
            ),
        )
    return store, ReconcileLoop(controllers)


def _pids_mentioning(*needles: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and all(n in cmdline for n in needles):
            pids.append(int(proc.name))
    return pids


def _environ(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    return dict(p.split("=", 1) for p in pairs if "=" in p)


FL_SERVER = """
from modelplane.privacy.federation import from_env
from modelplane.privacy.tls import Listener
task = from_env()
listener = Listener("0.0.0.0:" + task.address_of("server").rpartition(":")[2], task.tls)
for _ in range(2):
    channel = listener.accept()
    heard = channel.recv()
    channel.send({"kind": "ack"})
    print("server heard", heard["kind"], "from", channel.peer, flush=True)
"""
FL_PARTY = """
import os
from modelplane.privacy.federation import from_env
from modelplane.privacy.tls import connect
task = from_env()
address = task.address_of("server")
assert address == os.environ["MASTER_ADDR"] + ":" + os.environ["MASTER_PORT"], address
channel = connect(address, task.tls, "server", timeout=60)  # verifies the server's certificate names the host
channel.send({"kind": "hello"})
print("party got", channel.recv()["kind"], "from", address, flush=True)
"""


def test_federation_on_ray_certificates_name_the_node_address_parties_dial(
    ray_cluster: RayCluster, far_node: str, tmp_path: Path
) -> None:
    """Issue #9: the server runs on a node at 127.0.0.2; the party dials that address (MASTER_ADDR and
    the address book agree) and its TLS handshake verifies the per-launch certificate against it."""
    from modelplane.core.job import JobState

    backend = create_backend("ray", address=ray_cluster.address, state_dir=tmp_path / "backend")
    store, loop = _control_plane(backend, tmp_path)
    try:

        def role(code: str) -> dict[str, Any]:
            return {"command": ["python", "-c", code], "resources": {"cpu": "100m", "memory": "64Mi"}}

        store.create_job(
            {
                "apiVersion": "modelplane/v1",
                "kind": "FederatedJob",
                "metadata": {"name": "fl-far"},
                "spec": {
                    "queue": "training",
                    "server": role(FL_SERVER),
                    "parties": [{"name": n, "template": role(FL_PARTY)} for n in ("bank", "clinic")],
                    "nodeSelector": {"kubernetes.io/hostname": far_node},
                },
            }
        )
        box: list[Any] = []

        def ended() -> bool:
            loop.run_once()
            box[:] = [store.get_job("fl-far")]
            return box[0].state in (JobState.SUCCEEDED, JobState.FAILED)

        wait_for(ended, "the federation to end")
        job = box[0]
        logs = [backend.read_logs(job.id, rank, 0)[0] for rank in (0, 1, 2)]
        assert job.state is JobState.SUCCEEDED, (job.message, logs)
        assert "server heard hello from bank" in logs[0] and "server heard hello from clinic" in logs[0]
        assert all(f"party got ack from {FAR_IP}:" in log for log in logs[1:]), logs
    finally:
        store.close()


def test_a_replica_on_a_ray_node_binds_its_own_port_and_the_gateway_reaches_it(
    ray_cluster: RayCluster, far_node: str, tmp_path: Path
) -> None:
    """Issue #7: told port 0, the replica binds a port on its own node, reports it through the Ray
    actor, and the deployment publishes that endpoint, which a gateway serves a request through."""
    import asyncio

    import httpx
    import numpy as np

    from modelplane.serve.gateway import DeploymentConfig, Gateway, create_gateway_app
    from modelplane.serve.runtime import OnnxModel

    model_file = Path(__file__).resolve().parents[2] / "examples" / "models" / "digits-mlp.onnx"
    backend = create_backend("ray", address=ray_cluster.address, state_dir=tmp_path / "backend")
    store, loop = _control_plane(backend, tmp_path, deployments=True)
    try:
        store.create_deployment(
            {
                "apiVersion": "modelplane/v1",
                "kind": "InferenceDeployment",
                "metadata": {"name": "digits"},
                "spec": {
                    "queue": "inference",
                    "model": str(model_file),
                    "replicas": 1,
                    "nodeSelector": {"kubernetes.io/hostname": far_node},
                    "template": {
                        "command": ["python", "-m", "modelplane.serve.replica"],
                        "resources": {"cpu": "100m", "memory": "64Mi"},
                    },
                },
            }
        )

        def ready() -> bool:
            loop.run_once()
            return store.get_deployment("digits").status.get("ready") == 1

        wait_for(ready, "the replica to be ready")
        endpoints = store.get_deployment("digits").status["endpoints"]
        assert len(endpoints) == 1 and endpoints[0].startswith(f"http://{FAR_IP}:")
        # The replica (found by the model copy under this test's cache) was told port 0, and the
        # endpoint carries the port it reported from its node.
        [env] = [
            _environ(pid) for pid in _pids_mentioning(str(tmp_path / "cache"), "modelplane.serve.replica")
        ]
        assert env["MODELPLANE_PORT"] == "0" and env["MODELPLANE_HOST"] == FAR_IP
        reported = json.loads(Path(env["MODELPLANE_ADDRESS_FILE"]).read_text())
        assert endpoints == [f"http://{FAR_IP}:{reported['port']}"] and reported["port"] != 0

        model = OnnxModel(model_file.read_bytes())
        x = np.random.default_rng(2).standard_normal((2, *model.input.row_shape)).astype(np.float32)

        async def through_gateway() -> httpx.Response:
            gw = Gateway()
            gw.add_deployment(DeploymentConfig("digits", "digits"))
            gw.set_replicas("digits", endpoints)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_gateway_app(gw)), base_url="http://gw"
            ) as c:
                r = await c.post("/v1/deployments/digits/infer", json={"inputs": x.tolist()})
            await gw.aclose()
            return r

        r = asyncio.run(through_gateway())
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["outputs"]), model.run(x), rtol=1e-5, atol=1e-6)
    finally:
        for j in store.list_jobs(limit=100)[0]:
            backend.stop(j.id, 1.0)
        store.close()
