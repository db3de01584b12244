"""The Kubernetes backend: applies each placed job as Pods plus a headless Service (``k8s_render``),
watches the pods, reads their logs and deletes them, with the official ``kubernetes`` client.

Task handles are ``k8s:<namespace>/<pod name>``; pods carry the job's label, so a restarted control
plane lists them again. A pod that disappeared (deleted, evicted, its node removed) or whose phase
is ``Unknown`` (its node stopped reporting) is LOST, which the job controller turns into recovery.
Logs of finished pods are copied under ``<state_dir>/k8s/jobs/<job>/<rank>.log`` so that they stay
readable after the pods are deleted.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from modelplane.backends.base import (
    FINISHED_PHASES,
    Backend,
    BackendError,
    TaskLaunch,
    TaskPhase,
    TaskStatus,
    register_backend,
)
from modelplane.backends.k8s_render import (
    CONTAINER,
    RANK_LABEL,
    Pinning,
    RenderOptions,
    constraints_from_manifest,
    job_selector,
    render_job,
    task_host,
)
from modelplane.backends.local import _complete_utf8_prefix
from modelplane.core.errors import InvalidSpec, NotFound

INSTALL_HINT = "install the Kubernetes extra: pip install 'modelplane[k8s]'"
HANDLE_PREFIX = "k8s:"
LOST_REASONS = frozenset({"Evicted", "NodeLost", "NodeShutdown", "Terminated", "DeletionByTaintManager"})
# A container waiting for one of these will not start without a change to the job (an image pull
# failing, by contrast, may be a registry hiccup: the pod stays Starting with the reason shown).
PERMANENT_WAITING = frozenset({"InvalidImageName", "CreateContainerConfigError", "ErrImageNeverPull"})


def import_kubernetes() -> Any:
    try:
        import kubernetes
    except ImportError as exc:
        raise BackendError(
            f"the kubernetes backend needs the kubernetes package ({exc})", hint=INSTALL_HINT
        ) from exc
    return kubernetes


def load_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ``ApiClient`` from a kubeconfig file, else the in-cluster service account."""
    kubernetes = import_kubernetes()
    config: Any = kubernetes.config

    path = kubeconfig or os.environ.get("KUBECONFIG")
    try:
        if path or not os.environ.get("KUBERNETES_SERVICE_HOST"):
            return config.new_client_from_config(config_file=path, context=context)
        config.load_incluster_config()
        return kubernetes.client.ApiClient()
    except (config.ConfigException, OSError) as exc:
        raise BackendError(
            f"cannot load Kubernetes credentials ({exc})",
            hint="pass --kubeconfig PATH, set KUBECONFIG, or run inside the cluster",
        ) from exc


def _key(job_id: str) -> str:
    if not job_id or job_id in (".", ".."):
        raise InvalidSpec(
            f"job id {job_id!r} cannot name a directory", hint="use a non-empty job id", field="job_id"
        )
    return quote(job_id, safe="-_.")


def status_of_pod(
    job_id: str, rank: int, pod: dict[str, Any] | None, handle: str, stopped: bool
) -> TaskStatus:
    """A pod's status (JSON form, or None when it no longer exists) as a task status."""
    if pod is None:
        if stopped:
            return TaskStatus(
                job_id, rank, TaskPhase.FAILED, handle=handle, message="stopped on request: pod deleted"
            )
        return TaskStatus(
            job_id,
            rank,
            TaskPhase.LOST,
            handle=handle,
            message="pod is gone without an exit code (deleted, evicted, or its node was removed)",
        )
    status = pod.get("status") or {}
    phase = status.get("phase", "Pending")
    reason = status.get("reason") or ""
    node = (pod.get("spec") or {}).get("nodeName") or "?"
    container: dict[str, Any] = next(
        (c for c in status.get("containerStatuses") or [] if c.get("name") == CONTAINER), {}
    )
    state = container.get("state") or {}
    terminated = state.get("terminated") or {}
    if phase == "Succeeded":
        return TaskStatus(
            job_id, rank, TaskPhase.SUCCEEDED, exit_code=0, handle=handle, message="exited with code 0"
        )
    if phase == "Unknown" or reason in LOST_REASONS:
        return TaskStatus(
            job_id,
            rank,
            TaskPhase.LOST,
            handle=handle,
            message=f"pod on node {node} is {reason or phase}: {status.get('message', '')}".rstrip(": "),
        )
    if phase == "Failed":
        code = terminated.get("exitCode")
        words = f"exited with code {code}" if code is not None else (reason or "failed")
        prefix = "stopped on request: " if stopped else ""
        return TaskStatus(
            job_id,
            rank,
            TaskPhase.FAILED,
            exit_code=int(code) if code is not None else 1,
            handle=handle,
            message=prefix + (f"{words} ({reason})" if reason and code is not None else words),
        )
    if phase == "Running":  # the pod IP is where a serving task is reached (its endpoint)
        return TaskStatus(
            job_id,
            rank,
            TaskPhase.RUNNING,
            handle=handle,
            message=f"running on {node}",
            address=str(status.get("podIP") or ""),
        )
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in PERMANENT_WAITING:
        return TaskStatus(
            job_id,
            rank,
            TaskPhase.FAILED,
            exit_code=127,
            handle=handle,
            message=f"container cannot start: {waiting['reason']} {waiting.get('message', '')}".rstrip()
            + "; fix the job's image or env and submit it again",
        )
    why = waiting.get("reason") or reason
    message = f"pending on {node}" + (f": {why} {waiting.get('message', '')}".rstrip() if why else "")
    return TaskStatus(job_id, rank, TaskPhase.STARTING, handle=handle, message=message)


@register_backend("kubernetes")
class KubernetesBackend(Backend):
    """Runs placed tasks as Pods in one namespace of a Kubernetes cluster."""

    name = "kubernetes"

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        api_client: Any = None,
        namespace: str | None = None,
        pinning: Pinning | None = None,
        scheduler_name: str = "modelplane",
        default_image: str | None = None,
        manifests: Callable[[str], Any] | None = None,
        log_chunk_bytes: int = 1 << 20,
    ) -> None:
        super().__init__()
        pin = pinning or os.environ.get("MODELPLANE_K8S_PINNING", "nodeName")
        if pin not in ("nodeName", "scheduler"):
            raise InvalidSpec(f"unknown pinning {pin!r}", hint="use nodeName or scheduler", field="pinning")
        self.options = RenderOptions(
            namespace=namespace or os.environ.get("MODELPLANE_K8S_NAMESPACE", "default"),
            pinning=cast(Pinning, pin),
            scheduler_name=scheduler_name,
            default_image=default_image or os.environ.get("MODELPLANE_K8S_IMAGE"),
        )
        self._kubeconfig = kubeconfig or os.environ.get("MODELPLANE_KUBECONFIG")
        self._context = context
        self._api_client = api_client
        self.manifests = manifests
        self.log_chunk_bytes = log_chunk_bytes
        root = Path(state_dir).expanduser() if state_dir else Path(tempfile.mkdtemp(prefix="modelplane-k8s-"))
        self.state_dir = root.resolve() / "k8s"
        (self.state_dir / "jobs").mkdir(parents=True, exist_ok=True)

    # -- client ------------------------------------------------------------------------------------

    def core(self) -> Any:
        kubernetes = import_kubernetes()
        if self._api_client is None:
            self._api_client = load_client(self._kubeconfig, self._context)
        return kubernetes.client.CoreV1Api(self._api_client)

    def _json(self, obj: Any) -> dict[str, Any]:
        data = self.core().api_client.sanitize_for_serialization(obj)
        return cast(dict[str, Any], data)

    def import_nodes(self) -> list[Any]:
        """The cluster's nodes as ``k8s_import.ImportedNode`` (spec and state)."""
        from modelplane.backends.k8s_import import import_nodes

        return import_nodes(self.core().list_node().items)

    # -- paths -------------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.state_dir / "jobs" / _key(job_id)

    def _stopped(self, job_id: str) -> bool:
        return (self.job_dir(job_id) / "stopped").exists()

    # -- launch ------------------------------------------------------------------------------------

    def _task_hosts(self, tasks: Sequence[TaskLaunch]) -> dict[int, str]:
        """Each pod's DNS name under the job's headless Service (``k8s_render.task_host``)."""
        return {t.rank: task_host(t) for t in tasks}

    def _launch(self, tasks: Sequence[TaskLaunch]) -> list[TaskStatus]:
        by_job: dict[str, list[TaskLaunch]] = defaultdict(list)
        for t in tasks:
            by_job[t.job_id].append(t)
        out: list[TaskStatus] = []
        for job_id, job_tasks in by_job.items():
            out.extend(self._launch_job(job_id, job_tasks))
        return out

    def _launch_job(self, job_id: str, tasks: list[TaskLaunch]) -> list[TaskStatus]:
        kubernetes = import_kubernetes()
        api_exc = kubernetes.client.ApiException
        manifest = self.manifests(job_id) if self.manifests else None
        constraints = constraints_from_manifest(manifest) if manifest is not None else None
        rendered = render_job(tasks, constraints, self.options)
        core = self.core()
        ns = self.options.namespace
        job_dir = self.job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        for stale in job_dir.iterdir():
            stale.unlink(missing_ok=True)
        try:
            core.create_namespaced_service(ns, rendered.service)
        except api_exc as exc:
            if exc.status != 409:  # already there from an earlier attempt: reuse it
                raise
        statuses = []
        for pod in rendered.pods:
            name = pod["metadata"]["name"]
            rank = int(pod["metadata"]["labels"][RANK_LABEL])
            try:
                created = self._json(core.create_namespaced_pod(ns, pod))
            except api_exc as exc:
                if exc.status != 409:
                    raise
                created = self._json(core.read_namespaced_pod(name, ns))  # launched before a restart: adopt
            statuses.append(status_of_pod(job_id, rank, created, f"{HANDLE_PREFIX}{ns}/{name}", False))
        for binding in rendered.bindings:
            name = binding["metadata"]["name"]
            # The API answers a Binding with a Status, which the client cannot read back as a V1Binding.
            core.create_namespaced_pod_binding(name, ns, binding, _preload_content=False)
        return statuses

    # -- watching ----------------------------------------------------------------------------------

    def _pods(self, job_id: str) -> dict[int, dict[str, Any]]:
        listed = self.core().list_namespaced_pod(self.options.namespace, label_selector=job_selector(job_id))
        out = {}
        for item in listed.items:
            pod = self._json(item)
            with contextlib.suppress(KeyError, ValueError):
                out[int(pod["metadata"]["labels"][RANK_LABEL])] = pod
        return out

    def _poll(self, job_id: str, known: Sequence[TaskStatus]) -> list[TaskStatus]:
        pods = self._pods(job_id)
        stopped = self._stopped(job_id)
        ns = self.options.namespace
        if not known:
            known = [TaskStatus(job_id, r, TaskPhase.STARTING) for r in sorted(pods)]
        out = []
        for s in known:
            if s.phase in FINISHED_PHASES:
                out.append(s)
                continue
            pod = pods.get(s.rank)
            handle = s.handle or (f"{HANDLE_PREFIX}{ns}/{pod['metadata']['name']}" if pod else "")
            status = status_of_pod(job_id, s.rank, pod, handle, stopped)
            if status.phase in FINISHED_PHASES and pod is not None:
                self._keep_log(job_id, s.rank, pod["metadata"]["name"])
            out.append(status)
        return out

    # -- stopping ----------------------------------------------------------------------------------

    def _stop(self, job_id: str, grace_seconds: float) -> None:
        kubernetes = import_kubernetes()
        api_exc = kubernetes.client.ApiException
        core = self.core()
        ns = self.options.namespace
        job_dir = self.job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / "stopped").touch()
        pods = self._pods(job_id)
        for rank, pod in pods.items():
            self._keep_log(job_id, rank, pod["metadata"]["name"])
        # Answers are not read back (_preload_content=False): nothing in them is needed.
        core.delete_collection_namespaced_pod(
            ns,
            label_selector=job_selector(job_id),
            grace_period_seconds=max(int(grace_seconds), 0),
            _preload_content=False,
        )
        services = core.list_namespaced_service(ns, label_selector=job_selector(job_id)).items
        for svc in services:
            with contextlib.suppress(api_exc):
                core.delete_namespaced_service(svc.metadata.name, ns, _preload_content=False)

    # -- logs --------------------------------------------------------------------------------------

    def _keep_log(self, job_id: str, rank: int, pod: str) -> None:
        kubernetes = import_kubernetes()
        with contextlib.suppress(kubernetes.client.ApiException):
            text = self.core().read_namespaced_pod_log(pod, self.options.namespace, container=CONTAINER)
            path = self.job_dir(job_id) / f"{rank}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(str(text).encode("utf-8"))

    def _read_logs(self, job_id: str, rank: int, offset: int) -> tuple[str, int]:
        if offset < 0:
            raise InvalidSpec(
                f"log offset must be 0 or more, got {offset}", hint="start from offset 0", field="offset"
            )
        kept = self.job_dir(job_id) / f"{rank}.log"
        if kept.exists():
            data = kept.read_bytes()
        else:
            pod = self._pods(job_id).get(rank)
            if pod is None:
                raise NotFound(
                    f"no log for rank {rank} of job {job_id!r}",
                    hint="the pod does not exist (not launched yet, or deleted)",
                )
            # The API has no byte offset: read the whole log and cut it here.
            text = self.core().read_namespaced_pod_log(
                pod["metadata"]["name"], self.options.namespace, container=CONTAINER
            )
            data = str(text).encode("utf-8")
        offset = min(offset, len(data))
        chunk = data[offset : offset + max(self.log_chunk_bytes, 1)]
        keep = _complete_utf8_prefix(chunk)
        if keep == 0 and chunk:
            chunk = data[offset : offset + max(self.log_chunk_bytes, 1) + 3]
            keep = _complete_utf8_prefix(chunk)
        return chunk[:keep].decode("utf-8", errors="replace"), offset + keep
