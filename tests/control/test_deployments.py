"""The deployment controller against a real store (SQLite and PostgreSQL) and, for draining, real
replica processes placed by the scheduler and launched by the local backend."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelplane.backends.local import LocalBackend
from modelplane.control.base import ReconcileLoop
from modelplane.control.deployments import DEPLOYMENT_LABEL, DeploymentController, replica_jobs_by_deployment
from modelplane.control.jobs import JobController
from modelplane.control.scheduling import SchedulerController
from modelplane.core.errors import Conflict, NotFound
from modelplane.core.job import JobState
from modelplane.platform import make_scheduler
from modelplane.serve.registry import ModelRegistry
from modelplane.store import JobRecord, Store
from tests.helpers import gpu_node, queue

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "examples" / "models" / "digits-mlp.onnx"


def deployment_doc(name: str = "digits", model: str = str(MODEL), replicas: int = 1,
                   autoscaling: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "queue": "inference", "model": model, "replicas": replicas,
        "template": {"command": ["python", "-m", "modelplane.serve.replica", "--max-batch-size", "8"],
                     "resources": {"cpu": "100m", "memory": "128Mi"}},
    }
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    return {"apiVersion": "modelplane/v1", "kind": "InferenceDeployment",
            "metadata": {"name": name, "team": "product"}, "spec": spec}


@pytest.fixture
def pool(store: Store) -> Store:
    store.upsert_node(gpu_node("n1"))
    store.upsert_queue(queue("inference", team="product"))
    return store


def controller(store: Store, tmp_path: Path, **kw: Any) -> DeploymentController:
    kw.setdefault("registry_url", str(tmp_path / "registry"))
    return DeploymentController(store, time.time, cache_dir=tmp_path / "cache", **kw)


def children(store: Store, name: str = "digits") -> list[JobRecord]:
    jobs, _ = store.list_jobs(kind="InferenceDeployment", limit=1000)
    return sorted(replica_jobs_by_deployment(jobs).get(name, []), key=lambda j: j.name)


def _delete_and_wait(store: Store, loop: Any, name: str = "digits", timeout: float = 30) -> None:
    """Delete the deployment, run the controllers until it is gone, then close the store."""
    store.update_deployment(name, deleting=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        loop.run_once()
        try:
            store.get_deployment(name)
        except NotFound:
            break
        time.sleep(0.2)
    store.close()


def test_each_replica_is_a_single_task_job_linked_to_its_deployment(pool: Store, tmp_path: Path):
    pool.create_deployment(deployment_doc(replicas=2))
    c = controller(pool, tmp_path)
    c.reconcile()
    kids = children(pool)
    assert [k.name for k in kids] == ["digits-0", "digits-1"]
    for k in kids:
        assert k.queue == "inference" and k.team == "product" and k.state is JobState.PENDING
        spec = k.manifest_doc["spec"]
        assert spec["replicas"] == 1 and "autoscaling" not in spec
        assert k.manifest_doc["metadata"]["labels"][DEPLOYMENT_LABEL] == "digits"
        cmd = spec["template"]["command"]
        path = Path(cmd[cmd.index("--model-path") + 1])
        assert path.read_bytes() == MODEL.read_bytes() and path.is_relative_to(tmp_path / "cache")
        assert cmd[cmd.index("--model-name") + 1] == "digits" and "--port" not in cmd
    d = pool.get_deployment("digits")
    assert d.desired == 2 and d.status["ready"] == 0 and d.status["phase"] == "Progressing"
    c.reconcile()  # idempotent: nothing more to create
    assert len(children(pool)) == 2
    from prometheus_client import generate_latest

    from modelplane.obs.metrics import install_store_collector

    scraped = generate_latest(install_store_collector(pool)).decode()
    assert 'modelplane_deployment_replicas{deployment="digits",kind="desired"} 2.0' in scraped
    assert 'modelplane_deployment_replicas{deployment="digits",kind="ready"} 0.0' in scraped


def test_a_registry_reference_resolves_to_a_version(pool: Store, tmp_path: Path):
    reg = ModelRegistry(str(tmp_path / "registry"))
    reg.register("digits", MODEL.read_bytes(), now=0.0)
    reg.register("digits", MODEL.read_bytes(), now=1.0)
    reg.set_stage("digits", 2, "production")
    pool.create_deployment(deployment_doc(model="digits@production"))
    controller(pool, tmp_path).reconcile()
    d = pool.get_deployment("digits")
    assert d.status["modelRef"] == "digits:2" and d.status["error"] == ""
    assert Path(d.status["modelPath"]).read_bytes() == MODEL.read_bytes()
    assert len(children(pool)) == 1


def test_an_unknown_model_fails_the_deployment_with_a_reason_and_starts_nothing(pool: Store, tmp_path: Path):
    pool.create_deployment(deployment_doc(model="registry://ghost:3"))
    pool.create_deployment(deployment_doc(name="nofile", model=str(tmp_path / "missing.onnx")))
    controller(pool, tmp_path).reconcile()
    ghost, nofile = pool.get_deployment("digits"), pool.get_deployment("nofile")
    assert ghost.status["phase"] == "Failed" and "ghost:3" in ghost.status["error"]
    assert nofile.status["phase"] == "Failed" and "missing.onnx" in nofile.status["error"]
    assert [e["reason"] for e in ghost.status["events"]] == ["ModelUnavailable"]
    assert children(pool) == [] and children(pool, "nofile") == []


def test_scale_to_zero_then_a_waiting_request_brings_a_replica(pool: Store, tmp_path: Path):
    auto = {"minReplicas": 0, "maxReplicas": 3, "targetConcurrency": 1}
    pool.create_deployment(deployment_doc(replicas=0, autoscaling=auto))
    c = controller(pool, tmp_path, stable_s=2.0, panic_s=1.0, scale_to_zero_grace_s=0.0, downscale_delay_s=0.0)
    c.reconcile()
    assert pool.get_deployment("digits").desired == 0 and children(pool) == []
    assert pool.get_deployment("digits").status["phase"] == "ScaledToZero"
    # The gateway holds a request for a deployment at zero and reports it as waiting.
    pool.report_deployment_load("digits", {"inFlight": 0, "waiting": 2, "outstanding": {}})
    c.reconcile()
    d = pool.get_deployment("digits")
    assert d.desired >= 1 and len(children(pool)) == d.desired
    assert d.status["events"][-1]["reason"] == "ScaledUp"


def test_a_stale_load_sample_counts_as_no_load(pool: Store, tmp_path: Path):
    auto = {"minReplicas": 1, "maxReplicas": 4, "targetConcurrency": 1}
    pool.create_deployment(deployment_doc(autoscaling=auto))
    pool.report_deployment_load("digits", {"inFlight": 0, "waiting": 50, "outstanding": {}})
    c = controller(pool, tmp_path, load_stale_s=0.0)
    time.sleep(0.05)
    c.reconcile()
    assert pool.get_deployment("digits").desired == 1


def test_scale_down_stops_replicas_that_never_served_first(pool: Store, tmp_path: Path):
    pool.create_deployment(deployment_doc(replicas=3))
    c = controller(pool, tmp_path)
    c.reconcile()
    d = pool.get_deployment("digits")
    pool.update_deployment("digits", manifest=deployment_doc(replicas=1), expected_version=d.resource_version)
    c.reconcile()
    kids = children(pool)
    assert sum(k.cancel_requested for k in kids) == 2 and len(kids) == 3
    assert pool.get_deployment("digits").desired == 1


def test_delete_cancels_every_replica_then_removes_the_deployment(pool: Store, tmp_path: Path):
    pool.create_deployment(deployment_doc(replicas=2))
    c = controller(pool, tmp_path)
    c.reconcile()
    pool.update_deployment("digits", deleting=True)
    c.reconcile()
    kids = children(pool)
    assert all(k.cancel_requested for k in kids)
    assert pool.get_deployment("digits").status["phase"] == "Deleting"
    for k in kids:  # what the job controller does with a cancelled Pending job
        pool.transition_job(k.id, JobState.CANCELLED, "Cancelled", "cancelled by user")
    c.reconcile()
    with pytest.raises(NotFound):
        pool.get_deployment("digits")
    assert children(pool) == []


def test_a_deployment_name_is_unique_across_jobs_and_deployments(pool: Store):
    pool.create_deployment(deployment_doc())
    with pytest.raises(Conflict):
        pool.create_deployment(deployment_doc())
    with pytest.raises(NotFound, match="queue 'nope'"):
        pool.create_deployment(deployment_doc(name="other") | {"spec": {**deployment_doc()["spec"], "queue": "nope"}})


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.lists(st.integers(0, 3), max_size=4), max_size=3))
def test_replicas_are_grouped_by_their_deployment_label(groups: dict[str, list[int]]):
    jobs = []
    for parent, idxs in groups.items():
        for i, _ in enumerate(idxs):
            doc = deployment_doc(name=f"{parent}-{i}")
            doc["metadata"]["labels"] = {DEPLOYMENT_LABEL: parent}
            jobs.append(JobRecord(f"{parent}{i}", f"{parent}-{i}", "InferenceDeployment", "t", "q", doc,
                                  JobState.PENDING, "", "", 0, 0, 0, None, "", False, 0.0, 0.0, None, None, None, 1))
    jobs.append(JobRecord("x", "plain", "InferenceDeployment", "t", "q", deployment_doc(name="plain"),
                          JobState.PENDING, "", "", 0, 0, 0, None, "", False, 0.0, 0.0, None, None, None, 1))
    grouped = replica_jobs_by_deployment(jobs)
    assert {k: len(v) for k, v in grouped.items()} == {k: len(v) for k, v in groups.items() if v}


def test_scale_down_drains_the_least_busy_ready_replica(tmp_path: Path):
    """Real replicas: placed by the scheduler, launched with MODELPLANE_PORT by the job controller,
    probed ready; scaling 2 -> 1 takes the idle one out of the gateway's list, then stops it."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.upsert_node(gpu_node("n1"))
    store.upsert_queue(queue("inference", team="product"))
    backend = LocalBackend(tmp_path / "backend")
    deployments = controller(store, tmp_path, drain_delay_s=0.5)
    loop = ReconcileLoop([SchedulerController(store, make_scheduler("default"), time.time),
                          JobController(store, backend, time.time, stop_grace_seconds=5), deployments])
    store.create_deployment(deployment_doc(replicas=2))
    try:
        deadline = time.time() + 60
        while store.get_deployment("digits").status.get("ready", 0) < 2:
            assert time.time() < deadline, store.get_deployment("digits").status
            loop.run_once()
            time.sleep(0.2)
        d = store.get_deployment("digits")
        by_name = {r["name"]: r["endpoint"] for r in d.status["replicas"]}
        assert sorted(d.status["endpoints"]) == sorted(by_name.values())
        for url in by_name.values():  # each answers on the port the control plane chose
            assert httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 200
        busy, idle = "digits-0", "digits-1"
        store.report_deployment_load("digits", {"inFlight": 5, "waiting": 0,
                                                "outstanding": {by_name[busy]: 5, by_name[idle]: 0}})
        store.update_deployment("digits", manifest=deployment_doc(replicas=1), expected_version=d.resource_version)
        loop.run_once()
        d = store.get_deployment("digits")
        assert d.status["endpoints"] == [by_name[busy]] and idle in d.status["draining"]
        deadline = time.time() + 30
        while [k.name for k in children(store)] != [busy]:
            assert time.time() < deadline, [(k.name, k.state) for k in children(store)]
            loop.run_once()
            time.sleep(0.2)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{by_name[idle]}/v2/health/ready", timeout=2)
        assert store.get_deployment("digits").status["ready"] == 1
    finally:
        _delete_and_wait(store, loop)


def test_a_failing_replica_is_replaced_with_growing_backoff(pool: Store, tmp_path: Path):
    now = [1000.0]
    pool.create_deployment(deployment_doc(replicas=1))
    c = DeploymentController(pool, lambda: now[0], cache_dir=tmp_path / "cache")
    c.reconcile()
    for attempt, wait in ((1, 1.0), (2, 2.0), (3, 4.0)):
        (kid,) = children(pool)
        pool.transition_job(kid.id, JobState.FAILED, "TaskFailed", "rank 0 failed: exit code 1")
        c.reconcile()  # purged, and not replaced before the backoff
        assert children(pool) == []
        d = pool.get_deployment("digits")
        assert d.status["failures"] == attempt and d.status["events"][-1]["reason"] == "ReplicaFailed"
        assert f"replaced in {wait:g} s" in d.status["events"][-1]["message"]
        now[0] += wait - 0.1
        c.reconcile()
        assert children(pool) == []
        now[0] += 0.2
        c.reconcile()
        assert len(children(pool)) == 1


# -- rolling updates ------------------------------------------------------------------------------

@given(desired=st.integers(0, 8), surge=st.integers(0, 3), unavailable=st.integers(0, 3),
       old=st.integers(0, 8), new=st.integers(0, 8), data=st.data())
def test_a_rollout_step_keeps_availability_and_the_surge_bound_and_always_finishes(
        desired: int, surge: int, unavailable: int, old: int, new: int, data: st.DataObject):
    from modelplane.control.deployments import plan_rollout

    if surge == unavailable == 0:
        surge = 1  # RolloutStrategy.bounds never returns both zero
    old_ready = data.draw(st.integers(0, old))
    new_ready = data.draw(st.integers(0, new))
    step = plan_rollout(desired, surge, unavailable, new, new_ready, old, old_ready)
    total, ready = new + old, new_ready + old_ready
    assert 0 <= step.create <= max(0, desired - new)
    assert total + step.create <= max(total, desired + surge)
    assert 0 <= step.drop_unready_old <= old - old_ready and 0 <= step.drop_ready_old <= old_ready
    assert ready - step.drop_ready_old >= min(ready, desired - unavailable)  # never below the floor by our hand

    # Liveness: replicas created in one round are ready the next; the old revision is gone and the
    # new one at the desired count within a bounded number of rounds.
    new_total, new_ready_n, old_total, old_ready_n = 0, 0, old, old
    for _ in range(2 * (desired + old) + 4):
        s = plan_rollout(desired, surge, unavailable, new_total, new_ready_n, old_total, old_ready_n)
        assert new_ready_n + old_ready_n - s.drop_ready_old >= min(new_ready_n + old_ready_n, desired - unavailable)
        new_ready_n = new_total  # last round's creations became ready
        new_total += s.create
        old_total -= s.drop_unready_old + s.drop_ready_old
        old_ready_n -= s.drop_ready_old
        if new_total > desired:  # the controller scales the new revision down to the desired count
            new_ready_n, new_total = min(new_ready_n, desired), desired
    assert old_total == 0 and new_total == desired


def _apply(store: Store, doc: dict[str, Any]) -> None:
    """What ``modelplane apply`` stores for a changed deployment (see api.routes.deployments)."""
    from modelplane.api.routes.deployments import _update_deployment
    from modelplane.core.spec import parse_manifest

    class _State:
        pass

    state = _State()
    state.store = store  # type: ignore[attr-defined]
    _update_deployment(state, store.get_deployment(doc["metadata"]["name"]), doc, parse_manifest(doc))  # type: ignore[arg-type]


def test_a_rollout_whose_replicas_keep_failing_stops_and_the_old_revision_keeps_serving(pool: Store, tmp_path: Path):
    now = [1000.0]
    pool.create_deployment(deployment_doc(replicas=1))
    c = DeploymentController(pool, lambda: now[0], cache_dir=tmp_path / "cache", rollout_max_failures=2)
    c.reconcile()
    (old,) = children(pool)
    changed = deployment_doc(replicas=1)
    changed["spec"]["template"]["env"] = {"BROKEN": "1"}
    _apply(pool, changed)
    c.reconcile()
    d = pool.get_deployment("digits")
    assert d.status["rollout"]["phase"] == "Progressing" and d.status["phase"] == "Updating"
    assert d.status["revision"]["number"] == 1
    assert [e["reason"] for e in d.status["events"]][-2:] == ["RolloutStarted", "ModelResolved"]
    for _ in range(2):
        new = [k for k in children(pool) if k.name != old.name]
        assert len(new) == 1 and new[0].manifest_doc["spec"]["template"]["env"] == {"BROKEN": "1"}
        assert new[0].manifest_doc["metadata"]["annotations"]["modelplane.io/revision"] == "2"
        pool.transition_job(new[0].id, JobState.FAILED, "TaskFailed", "rank 0 failed: exit code 3")
        c.reconcile()
        now[0] += 10
        c.reconcile()
    d = pool.get_deployment("digits")
    assert d.status["rollout"]["phase"] == "Failed" and d.status["revision"]["number"] == 1
    failed = next(e for e in d.status["events"] if e["reason"] == "RolloutFailed")
    assert "2 of its replicas failed" in failed["message"] and "exit code 3" in failed["message"]
    assert [k.name for k in children(pool)] == [old.name] and not children(pool)[0].cancel_requested
    # The old revision still scales, from its own template.
    more = changed | {"spec": changed["spec"] | {"replicas": 2}}
    _apply(pool, more)
    c.reconcile()
    kids = children(pool)
    assert len(kids) == 2 and all("env" not in k.manifest_doc["spec"]["template"] for k in kids)
    # Applying the serving spec again is revision 3 of the same hash: nothing restarts.
    _apply(pool, deployment_doc(replicas=2))
    c.reconcile()
    d = pool.get_deployment("digits")
    assert d.status["rollout"] is None and d.status["revision"]["number"] == 3
    assert any(e["reason"] == "RolledBack" and "stays stopped" in e["message"] for e in d.status["events"])
    assert [k.name for k in children(pool)] == [k.name for k in kids]


def test_a_rollout_to_a_model_that_cannot_be_loaded_stops_at_once(pool: Store, tmp_path: Path):
    pool.create_deployment(deployment_doc(replicas=1))
    c = controller(pool, tmp_path)
    c.reconcile()
    (old,) = children(pool)
    _apply(pool, deployment_doc(model=str(tmp_path / "missing.onnx")))
    c.reconcile()
    d = pool.get_deployment("digits")
    assert d.status["rollout"]["phase"] == "Failed" and "missing.onnx" in d.status["rollout"]["message"]
    assert [e["reason"] for e in d.status["events"]][-2:] == ["RolloutStarted", "RolloutFailed"]
    assert [k.name for k in children(pool)] == [old.name] and d.status["phase"] != "Failed"


def _one_replica(tmp_path: Path, backend: type[LocalBackend]) -> tuple[Store, ReconcileLoop]:
    """A one-node pool with the scheduler, the job controller on ``backend`` and the deployment
    controller, and a one-replica deployment applied."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.upsert_node(gpu_node("n1"))
    store.upsert_queue(queue("inference", team="product"))
    loop = ReconcileLoop([SchedulerController(store, make_scheduler("default"), time.time),
                          JobController(store, backend(tmp_path / "backend"), time.time, stop_grace_seconds=5),
                          controller(store, tmp_path)])
    store.create_deployment(deployment_doc(replicas=1))
    return store, loop


def test_a_replica_endpoint_is_on_the_address_its_backend_reports(tmp_path: Path):
    """A backend that runs tasks on other hosts (Ray: the node's IP) reports where each one is; the
    replica's endpoint, and so the gateway, use it. The local backend reports nothing: 127.0.0.1."""
    import dataclasses

    from modelplane.control.jobs import _host

    class RemoteLooking(LocalBackend):  # the real local launch, reporting an address as Ray's does
        def _launch(self, tasks):  # type: ignore[no-untyped-def]
            return [dataclasses.replace(s, address="10.1.2.3") for s in super()._launch(tasks)]

    store, loop = _one_replica(tmp_path, RemoteLooking)
    try:
        deadline = time.time() + 30
        while not (kids := children(store)) or not store.list_tasks(kids[0].id) \
                or not store.list_tasks(kids[0].id)[0].endpoint:
            assert time.time() < deadline, "the replica was never launched"
            loop.run_once()
            time.sleep(0.2)
        endpoint = store.list_tasks(kids[0].id)[0].endpoint
        assert endpoint.startswith("http://10.1.2.3:") and int(endpoint.rsplit(":", 1)[1]) > 0
    finally:
        _delete_and_wait(store, loop)
    assert (_host(""), _host("10.0.0.5"), _host("fd00::1")) == ("127.0.0.1", "10.0.0.5", "[fd00::1]")


def test_an_address_known_only_once_the_replica_runs_updates_its_endpoint(tmp_path: Path):
    """Kubernetes knows a pod's IP only once it runs: the endpoint recorded at launch (this host)
    moves to the address the backend reports later, keeping the port."""
    import dataclasses

    class AddressLater(LocalBackend):
        def _poll(self, job_id, known):  # type: ignore[no-untyped-def]
            return [dataclasses.replace(s, address="10.9.8.7") for s in super()._poll(job_id, known)]

    store, loop = _one_replica(tmp_path, AddressLater)
    try:
        deadline = time.time() + 30
        first = ""
        while True:
            assert time.time() < deadline, "the replica's endpoint never moved to the reported address"
            loop.run_once()
            kids = children(store)
            endpoint = store.list_tasks(kids[0].id)[0].endpoint if kids and store.list_tasks(kids[0].id) else ""
            first = first or endpoint
            if endpoint.startswith("http://10.9.8.7:"):
                break
            time.sleep(0.2)
        assert first.startswith("http://127.0.0.1:") and first.rsplit(":", 1)[1] == endpoint.rsplit(":", 1)[1]
    finally:
        _delete_and_wait(store, loop)
