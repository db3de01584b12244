"""The Kubernetes backend's client calls, through the official client, over real HTTP.

NO REAL KUBERNETES API SERVER RUNS HERE: kube-apiserver is not packaged in Debian or on PyPI
(etcd is, the API server is not), and no container engine runs on this machine. So the calls go to
``FakeKubeApiServer`` below: a small HTTP server that speaks the few core/v1 endpoints the backend
uses, with the Kubernetes JSON shapes and status codes (201, 404, 409 AlreadyExists), validates
every object it is sent against the Kubernetes OpenAPI schema (kubernetes-validate, strict), and
lets the test play the kubelet (move pods through their phases, write their logs). It stands in
for a cluster we cannot run; what it answers was written from the API reference, not recorded.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

try:
    import kubernetes_validate
    from kubernetes import client
except ImportError as exc:  # pragma: no cover - the message is the point
    pytest.fail(
        f"{exc}: install the Kubernetes extra (.venv/bin/pip install kubernetes kubernetes-validate, "
        "or pip install 'modelplane[k8s]')",
        pytrace=False,
    )

from modelplane.backends.base import BackendError, TaskLaunch, TaskPhase, TaskStatus, create_backend
from modelplane.backends.k8s_render import JOB_LABEL, job_label
from modelplane.backends.kubernetes import KubernetesBackend, load_client
from modelplane.core.node import NodeState
from modelplane.core.spec import parse_manifest
from modelplane.privacy.federation import (
    FEDERATION_ENDPOINTS_ENV,
    FEDERATION_ROLE_ENV,
    TLS_CA_ENV,
    TLS_CERT_ENV,
    TLS_KEY_ENV,
)
from modelplane.privacy.tls import PemIdentity, TlsFiles, client_context, server_context, write_identity

SCHEMA_VERSION = "1.37.0"


class FakeKubeApiServer:
    """core/v1 pods, services, bindings, logs and nodes, in memory, over HTTP."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.logs: dict[tuple[str, str], str] = {}
        self.nodes: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.fail_next: dict[str, int] = {}  # method -> HTTP status to answer once
        self.lock = threading.Lock()
        self._version = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n) or b"null")

            def _send(self, code: int, payload: Any, content_type: str = "application/json") -> None:
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                body = self._body() if method in ("POST", "PUT") else None
                with server.lock:
                    server.requests.append((method, url.path))
                    failing = server.fail_next.pop(method, None)
                    if failing is not None:
                        self._send(failing, status(failing, "Forbidden", "injected failure"))
                        return
                    code, payload, ctype = server.route(method, url.path.strip("/").split("/"), query, body)
                self._send(code, payload, ctype)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _meta(self, obj: dict[str, Any]) -> None:
        self._version += 1
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{self._version}")
        meta["resourceVersion"] = str(self._version)
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")

    def route(self, method: str, parts: list[str], query: dict[str, str], body: Any) -> tuple[int, Any, str]:
        js = "application/json"
        if parts[:2] == ["api", "v1"] and parts[2:] == ["nodes"] and method == "GET":
            return 200, {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": self.nodes}, js
        if parts[:3] != ["api", "v1", "namespaces"] or len(parts) < 5:
            return 404, status(404, "NotFound", f"no route {'/'.join(parts)}"), js
        ns, kind, rest = parts[3], parts[4], parts[5:]
        store = {"pods": self.pods, "services": self.services}.get(kind)
        if store is None:
            return 404, status(404, "NotFound", kind), js
        if method == "POST" and not rest:
            kubernetes_validate.validate(body, SCHEMA_VERSION, strict=True)  # a bad body fails the test
            name = body["metadata"]["name"]
            if (ns, name) in store:
                return 409, status(409, "AlreadyExists", f'{kind} "{name}" already exists'), js
            self._meta(body)
            if kind == "pods":
                body["status"] = {"phase": "Pending"}
            store[(ns, name)] = body
            return 201, body, js
        if method == "GET" and not rest:
            selector = dict(p.split("=", 1) for p in query.get("labelSelector", "").split(",") if p)
            items = [
                o
                for (n, _), o in sorted(store.items())
                if n == ns
                and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
            ]
            list_kind = "PodList" if kind == "pods" else "ServiceList"
            return 200, {"apiVersion": "v1", "kind": list_kind, "metadata": {}, "items": items}, js
        if method == "DELETE" and not rest and kind == "pods":  # deletecollection
            selector = dict(p.split("=", 1) for p in query.get("labelSelector", "").split(",") if p)
            gone = [
                key
                for key, o in store.items()
                if key[0] == ns
                and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
            ]
            items = [store.pop(key) for key in gone]
            return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}, js
        name = rest[0] if rest else ""
        obj = store.get((ns, name))
        if obj is None:
            return 404, status(404, "NotFound", f'{kind} "{name}" not found'), js
        if method == "GET" and len(rest) == 1:
            return 200, obj, js
        if method == "DELETE" and len(rest) == 1:
            return 200, store.pop((ns, name)), js  # as the API server does: the deleted object
        if kind == "pods" and rest[1:] == ["log"] and method == "GET":
            return 200, self.logs.get((ns, name), ""), "text/plain"
        if kind == "pods" and rest[1:] == ["binding"] and method == "POST":
            kubernetes_validate.validate(body, SCHEMA_VERSION, strict=True)
            if obj["spec"].get("nodeName"):
                return 409, status(409, "Conflict", f"pod {name} is already assigned"), js
            obj["spec"]["nodeName"] = body["target"]["name"]
            return 201, status(201, "", "", "Success"), js
        return 405, status(405, "MethodNotAllowed", method), js

    # -- the kubelet's side, played by the test --

    def set_phase(
        self, name: str, phase: str, exit_code: int | None = None, reason: str | None = None, ns: str = "ml"
    ) -> None:
        with self.lock:
            pod = self.pods[(ns, name)]
            st: dict[str, Any] = {"phase": phase}
            if phase == "Running":  # the kubelet reports the pod's IP once it runs
                st["podIP"] = f"10.244.0.{len(self.pods)}"
            if reason:
                st["reason"] = reason
            if exit_code is not None:
                st["containerStatuses"] = [
                    {
                        "name": "task",
                        "ready": False,
                        "restartCount": 0,
                        "image": "i",
                        "imageID": "",
                        "state": {"terminated": {"exitCode": exit_code}},
                    }
                ]
            pod["status"] = st

    def delete(self, name: str, ns: str = "ml") -> None:
        with self.lock:
            del self.pods[(ns, name)]


def status(code: int, reason: str, message: str, st: str = "Failure") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": st,
        "message": message,
        "reason": reason,
        "code": code,
    }


@pytest.fixture
def apiserver() -> Iterator[FakeKubeApiServer]:
    server = FakeKubeApiServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def api_client(server: FakeKubeApiServer) -> client.ApiClient:
    config = client.Configuration()
    config.host = server.url
    return client.ApiClient(config)


def backend(server: FakeKubeApiServer, tmp_path: Path, **kwargs: Any) -> KubernetesBackend:
    made = create_backend(
        "kubernetes",
        state_dir=tmp_path / "state",
        api_client=api_client(server),
        namespace="ml",
        default_image="registry.local/modelplane:1",
        **kwargs,
    )
    assert isinstance(made, KubernetesBackend)
    return made


def tasks(job_id: str = "job-1", world: int = 2) -> list[TaskLaunch]:
    return [
        TaskLaunch(
            job_id=job_id,
            job_name="ddp-demo",
            pod_set="worker",
            index=r,
            rank=r,
            world_size=world,
            node=f"gpu-{r}",
            command=["python", "train.py"],
            devices=(0,),
            accelerator_model="NVIDIA-A100",
            master_port=29500,
        )
        for r in range(world)
    ]


def names(statuses: list[TaskStatus]) -> list[str]:
    return [s.handle.split("/", 1)[1] for s in statuses]


def test_launch_creates_service_and_pinned_pods(apiserver: FakeKubeApiServer, tmp_path: Path) -> None:
    manifest = parse_manifest(
        {
            "apiVersion": "modelplane/v1",
            "kind": "TrainingJob",
            "metadata": {"name": "ddp-demo"},
            "spec": {
                "queue": "training",
                "replicas": 2,
                "template": {
                    "command": ["python", "train.py"],
                    "resources": {"cpu": "2", "memory": "4Gi", "accelerators": 1},
                },
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
        }
    )
    be = backend(apiserver, tmp_path, manifests=lambda job_id: manifest)
    statuses = be.launch(tasks())
    assert [s.phase for s in statuses] == [TaskPhase.STARTING, TaskPhase.STARTING]
    assert all(s.handle.startswith("k8s:ml/") for s in statuses)
    assert len(apiserver.services) == 1
    pods = [apiserver.pods[("ml", n)] for n in names(statuses)]
    assert [p["spec"]["nodeName"] for p in pods] == ["gpu-0", "gpu-1"]
    assert pods[0]["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pods[1]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pods[1]["metadata"]["labels"][JOB_LABEL] == job_label("job-1")


def test_phases_exit_codes_and_logs(apiserver: FakeKubeApiServer, tmp_path: Path) -> None:
    be = backend(apiserver, tmp_path)
    statuses = be.launch(tasks())
    pod0, pod1 = names(statuses)
    apiserver.set_phase(pod0, "Running")
    apiserver.set_phase(pod1, "Running")
    apiserver.logs[("ml", pod0)] = "step 1\ncafé\n"
    statuses = be.poll("job-1", statuses)
    assert [s.phase for s in statuses] == [TaskPhase.RUNNING, TaskPhase.RUNNING]
    assert all(s.address.startswith("10.244.0.") for s in statuses)  # a serving pod's endpoint host
    text, offset = be.read_logs("job-1", 0, 0)
    assert text == "step 1\ncafé\n" and offset == len(text.encode())
    assert be.read_logs("job-1", 0, 7) == ("café\n", offset)
    apiserver.set_phase(pod0, "Succeeded", exit_code=0)
    apiserver.set_phase(pod1, "Failed", exit_code=3, reason="Error")
    final = be.poll("job-1", statuses)
    assert [(s.phase, s.exit_code) for s in final] == [(TaskPhase.SUCCEEDED, 0), (TaskPhase.FAILED, 3)]
    # Logs of finished pods were kept: still readable once the pods are gone.
    be.stop("job-1", grace_seconds=0)
    assert not apiserver.pods and not apiserver.services
    assert be.read_logs("job-1", 0, 0)[0] == "step 1\ncafé\n"


@pytest.mark.parametrize(
    ("how", "phase"),
    [
        ("unknown", TaskPhase.LOST),
        ("evicted", TaskPhase.LOST),
        ("deleted", TaskPhase.LOST),
        ("oom", TaskPhase.FAILED),
    ],
)
def test_node_loss_and_eviction_are_lost(
    apiserver: FakeKubeApiServer, tmp_path: Path, how: str, phase: TaskPhase
) -> None:
    be = backend(apiserver, tmp_path)
    statuses = be.launch(tasks())
    pod1 = names(statuses)[1]
    if how == "unknown":
        apiserver.set_phase(pod1, "Unknown")
    elif how == "evicted":
        apiserver.set_phase(pod1, "Failed", reason="Evicted")
    elif how == "deleted":
        apiserver.delete(pod1)
    else:
        apiserver.set_phase(pod1, "Failed", exit_code=137, reason="OOMKilled")
    after = be.poll("job-1", statuses)
    assert after[1].phase is phase and after[0].phase is TaskPhase.STARTING
    if how == "oom":
        assert after[1].exit_code == 137 and "OOMKilled" in after[1].message


@pytest.mark.parametrize(
    ("reason", "phase"), [("ImagePullBackOff", TaskPhase.STARTING), ("InvalidImageName", TaskPhase.FAILED)]
)
def test_waiting_containers(
    apiserver: FakeKubeApiServer, tmp_path: Path, reason: str, phase: TaskPhase
) -> None:
    be = backend(apiserver, tmp_path)
    statuses = be.launch(tasks(world=1))
    with apiserver.lock:
        apiserver.pods[("ml", names(statuses)[0])]["status"] = {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "task",
                    "ready": False,
                    "restartCount": 0,
                    "image": "i",
                    "imageID": "",
                    "state": {"waiting": {"reason": reason, "message": "bad image"}},
                }
            ],
        }
    after = be.poll("job-1", statuses)[0]
    assert after.phase is phase and reason in after.message


def test_stop_deletes_and_reads_as_stopped(apiserver: FakeKubeApiServer, tmp_path: Path) -> None:
    be = backend(apiserver, tmp_path)
    statuses = be.launch(tasks())
    be.stop("job-1", grace_seconds=5)
    assert ("DELETE", "/api/v1/namespaces/ml/pods") in apiserver.requests
    final = be.poll("job-1", statuses)
    assert all(s.phase is TaskPhase.FAILED and s.message.startswith("stopped on request") for s in final)


def test_secondary_scheduler_binds_each_pod(apiserver: FakeKubeApiServer, tmp_path: Path) -> None:
    be = backend(apiserver, tmp_path, pinning="scheduler")
    statuses = be.launch(tasks())
    for rank, name in enumerate(names(statuses)):
        pod = apiserver.pods[("ml", name)]
        assert pod["spec"]["schedulerName"] == "modelplane"
        assert pod["spec"]["nodeName"] == f"gpu-{rank}"  # set by the Binding, as the API server does
        assert ("POST", f"/api/v1/namespaces/ml/pods/{name}/binding") in apiserver.requests


def test_restarted_backend_finds_and_adopts_its_pods(apiserver: FakeKubeApiServer, tmp_path: Path) -> None:
    statuses = backend(apiserver, tmp_path).launch(tasks())
    apiserver.set_phase(names(statuses)[0], "Running")
    fresh = backend(apiserver, tmp_path)
    assert [s.phase for s in fresh.poll("job-1", [])] == [TaskPhase.RUNNING, TaskPhase.STARTING]
    again = fresh.launch(tasks())  # a launch interrupted by a crash and repeated: pods exist (409)
    assert [s.handle for s in again] == [s.handle for s in statuses] and len(apiserver.pods) == 2


def test_api_errors_become_backend_errors(apiserver: FakeKubeApiServer, tmp_path: Path) -> None:
    be = backend(apiserver, tmp_path)
    apiserver.fail_next["POST"] = 403
    with pytest.raises(BackendError, match="Forbidden"):
        be.launch(tasks())


def test_import_nodes_through_the_client(apiserver: FakeKubeApiServer, tmp_path: Path) -> None:
    apiserver.nodes = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "gpu-0", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "8"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    ]
    imported = backend(apiserver, tmp_path).import_nodes()
    assert [(n.spec.name, n.spec.accelerators.model, n.state) for n in imported] == [
        ("gpu-0", "NVIDIA-H100-80GB-HBM3", NodeState.READY)
    ]


def test_missing_kubeconfig_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(BackendError) as err:
        load_client(str(tmp_path / "no-such-kubeconfig"))
    assert "kubeconfig" in (err.value.hint or "")


# -- a federation's names and certificates, as the job controller issues them for Kubernetes --------


def _handshake(server: TlsFiles, client_files: TlsFiles, name: str) -> tuple[str, str]:
    """A real mutual-TLS handshake over a loopback socket, the client verifying the server against
    ``name`` (the name it would dial; the pod DNS name does not resolve here, so the socket goes to
    127.0.0.1 while the name check is the one the party makes). Returns (server CN, client CN)."""
    cn = {}

    def common_name(cert: Any) -> str:
        return next(v for rdn in cert["subject"] for k, v in rdn if k == "commonName")

    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_context(server).wrap_socket(conn, server_side=True) as tls:
                    cn["client"] = common_name(tls.getpeercert())
            except (ssl.SSLError, OSError):
                conn.close()  # the client refused our certificate: nothing to record

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname()[:2], timeout=10) as raw,
                client_context(client_files).wrap_socket(raw, server_hostname=name) as tls,
            ):
                cn["server"] = common_name(tls.getpeercert())
        finally:
            thread.join(timeout=10)
    return cn["server"], cn.get("client", "")


def test_federation_certificates_name_the_pod_dns_names_the_parties_dial(
    apiserver: FakeKubeApiServer, tmp_path: Path
) -> None:
    """The whole path: scheduler, job controller (address book and PKI), Kubernetes rendering."""
    import time

    from cryptography import x509

    from modelplane.control.base import ReconcileLoop
    from modelplane.control.jobs import JobController
    from modelplane.control.scheduling import SchedulerController
    from modelplane.core.job import JobState
    from modelplane.platform import make_scheduler
    from modelplane.store import Store
    from tests.helpers import gpu_node, queue

    store = Store(f"sqlite:///{tmp_path / 'modelplane.db'}")
    try:
        for name in ("site-a", "site-b", "site-c"):
            store.upsert_node(gpu_node(name))
        store.upsert_queue(queue())
        loop = ReconcileLoop(
            [
                SchedulerController(store, make_scheduler("default"), time.time),
                JobController(store, backend(apiserver, tmp_path), time.time),
            ]
        )
        role = {
            "command": ["python", "-m", "modelplane.privacy.vertical.job"],
            "image": "registry.local/fl:1",
            "resources": {"cpu": "1", "memory": "1Gi"},
        }
        store.create_job(
            {
                "apiVersion": "modelplane/v1",
                "kind": "FederatedJob",
                "metadata": {"name": "vfl"},
                "spec": {
                    "queue": "training",
                    "server": role,
                    "parties": [{"name": "guest", "template": role}, {"name": "host", "template": role}],
                },
            }
        )
        for _ in range(20):
            loop.run_once()
            if store.get_job("vfl").state is JobState.RUNNING:
                break
        assert store.get_job("vfl").state is JobState.RUNNING
    finally:
        store.close()
    pods = {}
    for pod in apiserver.pods.values():
        env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
        dns = f"{pod['spec']['hostname']}.{pod['spec']['subdomain']}"  # the headless Service's record
        pods[env[FEDERATION_ROLE_ENV]] = (dns, env)
    assert set(pods) == {"server", "guest", "host"}
    server_dns, server_env = pods["server"]
    sans = (
        x509.load_pem_x509_certificate(server_env[TLS_CERT_ENV].encode())
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value.get_values_for_type(x509.DNSName)
    )
    for role_name, (dns, env) in pods.items():
        # What each pod dials: MASTER_ADDR (the server, rank 0) and the address book; all named in the SANs.
        assert env["MASTER_ADDR"] == server_dns
        book = json.loads(env[FEDERATION_ENDPOINTS_ENV])
        assert book["server"] == f"{server_dns}:{env['MASTER_PORT']}"
        assert {address.rpartition(":")[0] for address in book.values()} == {d for d, _ in pods.values()}
        assert dns in sans, (role_name, dns, sans)
    files = {
        r: write_identity(
            PemIdentity(env[TLS_CA_ENV], env[TLS_CERT_ENV], env[TLS_KEY_ENV]), tmp_path / "tls" / r, r
        )
        for r, (_, env) in pods.items()
    }
    guest_dials = pods["guest"][1]["MASTER_ADDR"]
    assert _handshake(files["server"], files["guest"], guest_dials) == ("server", "guest")
    host_dials_guest = json.loads(pods["host"][1][FEDERATION_ENDPOINTS_ENV])["guest"].rpartition(":")[0]
    assert _handshake(files["guest"], files["host"], host_dials_guest) == ("guest", "host")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):  # the check is live
        _handshake(files["server"], files["guest"], f"elsewhere.{server_dns}")
