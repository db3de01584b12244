"""The job controller: launches admitted jobs, watches running ones, and ends, retries, requeues or
cancels them — always by proposing a transition to the state machine, never by writing a state.

Crash safety: task rows are written *before* the backend launches them and updated with the
backend's handle after, so a control plane killed at any point finds either handles to re-adopt or
rows without handles, whose job it stops and launches again. A job is never left stuck in Running:
tasks the backend can no longer see are reported Lost and the job recovers or fails.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from modelplane.agent.peers import PEER_MEMORY_LABEL, peer_urls
from modelplane.backends.base import FINISHED_PHASES, Backend, BackendError, TaskLaunch, TaskPhase, TaskStatus
from modelplane.control.base import Controller
from modelplane.control.federation import federation_env
from modelplane.core.errors import Conflict, InvalidTransition, ModelplaneError
from modelplane.core.job import JobState
from modelplane.core.node import NodeState
from modelplane.core.spec import FederatedJob, template_for
from modelplane.obs.metrics import LAUNCH_SECONDS, MIGRATIONS, TRANSITIONS
from modelplane.store import JobRecord, Store

log = logging.getLogger("modelplane.control.jobs")
EXIT_GRACE_S = 60.0  # how long a rank may take to exit after its last ("exiting") heartbeat
FEDERATION_PARTY_GRACE_S = 60.0  # how long parties may run on after their federation's server finished
# A serving task's port: chosen here, or 0 where the task picks it and reports it.
SERVE_PORT_ENV = "MODELPLANE_PORT"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _endpoint(previous: str | None, address: str, port: int | None) -> str | None:
    """A serving task's endpoint from what its backend reports now, else what is known already.

    ``port``: the port the task reported it bound (it was told port 0, or it reports anyway);
    ``address``: the host the backend reaches it at, when it knows one (a pod's IP once it runs).
    A task that reports nothing and had no endpoint is not a serving task: None.
    """
    if port is not None:
        return f"http://{_host(address)}:{port}"
    if previous and address:
        scheme, _, rest = previous.partition("://")
        return f"{scheme}://{_host(address)}:{rest.rpartition(':')[2]}"
    return previous


def _host(address: str) -> str:
    """A serving task's host in a URL: the address its backend reports (the node it runs on), else
    this host (the local backend); an IPv6 address in brackets."""
    address = address or "127.0.0.1"
    return f"[{address}]" if ":" in address else address


class JobController(Controller):
    name = "jobs"

    def __init__(
        self,
        store: Store,
        backend: Backend,
        clock: Callable[[], float],
        stop_grace_seconds: float = 10.0,
        runtime_dir: Path | None = None,
        checkpoint_root: str = "",
        heartbeat_timeout: float = 120.0,
        hang_timeout: float = 1800.0,
        restart_backoff: float = 0.0,
        max_restart_backoff: float = 300.0,
        peer_memory_urls: str = "",
        peer_memory_password: str = "",
        lineage_url: str = "",
    ) -> None:
        """``runtime_dir`` holds per-job heartbeat and preemption-notice files that the training
        runtime (``modelplane.train.init()``) writes and reads; ``checkpoint_root`` is where each job's
        checkpoints go (a path or fsspec URL), stable across restarts so that a requeued job resumes."""
        self.store = store
        self.backend = backend
        self.clock = clock
        self.stop_grace = stop_grace_seconds
        self.runtime_dir = runtime_dir
        self.checkpoint_root = checkpoint_root
        self.heartbeat_timeout = heartbeat_timeout
        self.hang_timeout = hang_timeout
        self.restart_backoff = restart_backoff
        self.peer_memory_urls = peer_memory_urls  # operator override of the URLs the node agents publish
        self.peer_memory_password = peer_memory_password
        self.max_restart_backoff = max_restart_backoff
        self.lineage_url = lineage_url  # pipelines and training runs record what they read and wrote there

    def _runtime_env(self, job: JobRecord) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.checkpoint_root:
            env["MODELPLANE_CHECKPOINT_URL"] = f"{self.checkpoint_root.rstrip('/')}/{job.name}"
        # The peer-memory tier: each rank's copy goes to the Redis the next node of its placement
        # publishes (modelplane.agent.peers), unless the operator fixed the URLs.
        peers = self.peer_memory_urls
        if not peers and job.placement is not None:
            published = {n.name: n.spec.labels.get(PEER_MEMORY_LABEL, "") for n in self.store.list_nodes()}
            ranks = sorted(job.placement.assignments, key=lambda a: a.rank)
            peers = ",".join(peer_urls([a.node for a in ranks], published, self.peer_memory_password))
        if peers:
            env["MODELPLANE_PEER_MEMORY_URLS"] = peers
        if self.lineage_url:
            env["MODELPLANE_LINEAGE_URL"] = self.lineage_url
        from modelplane.settings import Settings

        # The registry the API and deployments use (routes/models.py): a federation's server
        # registers its final model there, with its job as the training run.
        env["MODELPLANE_MODEL_REGISTRY_URL"] = Settings().resolved_model_registry_url
        from modelplane.store.sensitive_catalog import launch_env  # API URL + this launch's job credential

        env |= launch_env(self.store, job.id)  # for key release of sensitive datasets (data/sensitive.py)
        if self.runtime_dir is not None:
            jdir = self.runtime_dir / job.id
            jdir.mkdir(parents=True, exist_ok=True)
            env["MODELPLANE_HEARTBEAT_FILE"] = str(jdir / "heartbeat-{rank}.json")
            env["MODELPLANE_PREEMPT_FILE"] = str(jdir / "preempt")
        return env

    def _stale_heartbeats(self, job: JobRecord, ranks: list[int]) -> tuple[list[int], list[int]]:
        """Ranks that wrote heartbeats and then fell silent for longer than the timeout (a dead or
        wedged process the backend still sees as running), and ranks whose heartbeats go on but whose
        training step has not advanced for ``hang_timeout`` (hung in a collective, a deadlock)."""
        if self.runtime_dir is None:
            return [], []
        now = self.clock()
        stale: list[int] = []
        hung: list[int] = []
        for rank in ranks:
            path = self.runtime_dir / job.id / f"heartbeat-{rank}.json"
            try:
                beat = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # no heartbeat yet: the task does not use the runtime, or has not started
            silent = now - float(beat.get("time", now))
            if beat.get("exiting"):
                # The rank said goodbye: its exit shows in the backend's status; only a process that
                # lingers far beyond that is treated as lost.
                if silent > self.heartbeat_timeout + EXIT_GRACE_S:
                    stale.append(rank)
                continue
            if silent > self.heartbeat_timeout:
                stale.append(rank)
            elif int(beat.get("step", 0)) > 0 and now - float(beat.get("step_time", now)) > self.hang_timeout:
                hung.append(rank)  # first steps (compilation, data loading) may be slow: not counted
        return stale, hung

    def _clear_runtime_files(self, job: JobRecord) -> None:
        """Forget what an earlier attempt left before a (re)launch: its heartbeats are older than the
        timeout by the time the new ranks start (HeartbeatLost at once), and its preemption notice
        would make the new ranks checkpoint and stop at their first step (a preempted job would end
        "Succeeded" without finishing its training)."""
        if self.runtime_dir is None:
            return
        jdir = self.runtime_dir / job.id
        for path in [*jdir.glob("heartbeat-*.json"), jdir / "preempt"]:
            path.unlink(missing_ok=True)

    def _transition(
        self, job_id: str, proposed: JobState, reason: str, message: str = "", **kw: Any
    ) -> JobRecord:
        job = self.store.transition_job(job_id, proposed, reason, message, **kw)
        TRANSITIONS.labels(job.state.value, job.reason).inc()
        if reason == "NodeLost":
            MIGRATIONS.inc()
        return job

    def reconcile(self) -> None:
        jobs, _ = self.store.list_jobs(
            states=[JobState.ADMITTED, JobState.RUNNING, JobState.PREEMPTED, JobState.RECOVERING],
            limit=100_000,
        )
        # Pending jobs are the scheduler's, except those the user cancelled.
        jobs += self.store.list_jobs(states=[JobState.PENDING], cancel_requested=True, limit=100_000)[0]
        node_states = {n.name: n.state for n in self.store.list_nodes()}
        for job in jobs:
            try:
                self._reconcile_job(job, node_states)
            except (Conflict, InvalidTransition) as exc:
                log.info("job %s changed under us (%s); next round", job.name, exc.message)

    # -- one job ----------------------------------------------------------------------------------

    def _reconcile_job(self, job: JobRecord, node_states: dict[str, NodeState]) -> None:
        state = job.state
        if job.cancel_requested and state in (JobState.PENDING, JobState.PREEMPTED, JobState.RECOVERING):
            self.backend.stop(job.id, self.stop_grace)
            self._transition(job.id, JobState.CANCELLED, "Cancelled", "cancelled by user")
        elif job.cancel_requested:
            self.backend.stop(job.id, self.stop_grace)
            self._record_final(job)
            self._transition(job.id, JobState.CANCELLED, "Cancelled", "cancelled by user")
        elif state is JobState.ADMITTED:
            self._start(job)
        elif state is JobState.RUNNING:
            self._watch(job, node_states)
        elif state in (JobState.PREEMPTED, JobState.RECOVERING):
            if state is JobState.PREEMPTED and self.runtime_dir is not None:
                # The notice lets the training runtime checkpoint at a step boundary before SIGTERM.
                (self.runtime_dir / job.id).mkdir(parents=True, exist_ok=True)
                (self.runtime_dir / job.id / "preempt").write_text(job.message)
            self.backend.stop(job.id, self.stop_grace)
            self.store.clear_tasks(job.id)
            if state is JobState.RECOVERING and self.clock() - job.updated_at < self._backoff(job):
                return  # exponential backoff: a job that keeps failing does not hammer the pool
            why = "preempted" if state is JobState.PREEMPTED else "recovering"
            self._transition(job.id, JobState.PENDING, "Requeued", f"{why}; waiting to be placed again")

    def _backoff(self, job: JobRecord) -> float:
        """Seconds to wait before the n-th restart: base x 2^(n-1), capped."""
        if self.restart_backoff <= 0:
            return 0.0
        return float(min(self.restart_backoff * 2 ** max(0, job.restarts - 1), self.max_restart_backoff))

    def _launches(self, job: JobRecord) -> list[TaskLaunch]:
        assert job.placement is not None
        manifest = job.manifest
        nodes = {n.name: n for n in self.store.list_nodes()}
        world = len(job.placement.assignments)
        port = _free_port()
        runtime_env = self._runtime_env(job)
        parallelism = getattr(manifest.spec, "parallelism", None)
        if parallelism is not None:  # the degrees the training script builds its process groups from
            runtime_env |= {
                "MODELPLANE_PARALLEL_DATA": str(parallelism.data),
                "MODELPLANE_PARALLEL_TENSOR": str(parallelism.tensor),
                "MODELPLANE_PARALLEL_PIPELINE": str(parallelism.pipeline),
                "MODELPLANE_MICRO_BATCH_SIZE": str(parallelism.micro_batch_size),
            }
        privacy = getattr(manifest.spec, "privacy", None)
        if privacy is not None:  # DP-SGD / adversarial options, applied by modelplane.train.make_private
            from modelplane.core.spec import PRIVACY_SPEC_ENV

            runtime_env[PRIVACY_SPEC_ENV] = privacy.model_dump_json(by_alias=True, exclude_none=True)
        out = []
        for a in sorted(job.placement.assignments, key=lambda a: a.rank):
            tmpl = template_for(manifest, a.pod_set)
            node = nodes.get(a.node)
            model = node.spec.accelerators.model if node and node.spec.accelerators else None
            env = runtime_env | dict(tmpl.env)
            if manifest.kind == "InferenceDeployment":
                # A replica binds where the control plane says, unless its backend runs it on another
                # machine: then it picks a port there and reports it (TaskStatus.port).
                env[SERVE_PORT_ENV] = "0" if self.backend.tasks_choose_ports else str(_free_port())
            elif manifest.kind == "FederatedJob" and a.pod_set != "server":
                # A party listens where the address book says, so its port is fixed before launch.
                env[SERVE_PORT_ENV] = str(_free_port())
            if isinstance(manifest, FederatedJob) and a.pod_set == "server":  # read by horizontal/server.py
                env["MODELPLANE_FL_ROUNDS"] = str(manifest.spec.rounds)
            out.append(
                TaskLaunch(
                    job_id=job.id,
                    job_name=job.name,
                    pod_set=a.pod_set,
                    index=a.index,
                    rank=a.rank,
                    world_size=world,
                    node=a.node,
                    command=list(tmpl.command),
                    env=env,
                    working_dir=tmpl.working_dir,
                    devices=a.devices,
                    gpu_milli=a.gpu_milli,
                    accelerator_model=model,
                    master_port=port,
                    image=tmpl.image,
                )
            )
        # Where the backend will run each task decides what the others dial -- MASTER_ADDR, the
        # address book -- and so what a federation's certificates must name: asked before minting.
        hosts = self.backend.task_hosts(out)
        out = [replace(t, master_addr=hosts[out[0].rank]) for t in out]
        if manifest.kind == "FederatedJob":  # the parties' address book and a PKI of their own
            issued = federation_env(
                {
                    t.pod_set: (
                        hosts[t.rank],
                        t.master_port if t.pod_set == "server" else int(t.env[SERVE_PORT_ENV]),
                    )
                    for t in out
                }
            )
            out = [replace(t, env=t.env | issued[t.pod_set]) for t in out]
        return out

    def _start(self, job: JobRecord) -> None:
        known = self.store.list_tasks(job.id)
        if known and all(t.handle for t in known):
            # Launched before a restart but not yet marked Running: watch what is there.
            self._transition(
                job.id,
                JobState.RUNNING,
                "Started",
                "tasks re-adopted after restart",
                expected_version=job.resource_version,
            )
            return
        if known:
            # Rows without handles: the launch was interrupted; clear whatever may have started.
            self.backend.stop(job.id, self.stop_grace)
            self.store.clear_tasks(job.id)
        try:
            launches = self._launches(job)
        except BackendError as exc:  # the backend could not say where the tasks go: as a failed launch
            self._transition(job.id, JobState.FAILED, "LaunchFailed", str(exc))
            return
        except ModelplaneError as exc:
            self._transition(job.id, JobState.FAILED, "InvalidSpec", str(exc))
            return
        self._clear_runtime_files(job)
        for t in launches:
            self.store.put_task(
                job.id, t.rank, pod_set=t.pod_set, node=t.node, phase=TaskPhase.STARTING.value
            )
        try:
            statuses = self.backend.launch(launches)
            LAUNCH_SECONDS.labels(self.backend.name).observe(self.backend.last_launch_seconds)
        except ModelplaneError as exc:
            self.backend.stop(job.id, self.stop_grace)
            self._transition(job.id, JobState.FAILED, "LaunchFailed", str(exc))
            return
        by_rank = {t.rank: t for t in launches}
        for st in statuses:
            port = by_rank[st.rank].env.get(SERVE_PORT_ENV)
            chosen = int(port) if port and port != "0" else None  # 0: known once the task reports it
            self.store.put_task(
                job.id,
                st.rank,
                pod_set=by_rank[st.rank].pod_set,
                node=by_rank[st.rank].node,
                phase=st.phase.value,
                exit_code=st.exit_code,
                message=st.message,
                handle=st.handle,
                endpoint=_endpoint(None, st.address, st.port or chosen),
            )
        self._transition(
            job.id,
            JobState.RUNNING,
            "Started",
            f"{len(launches)} task(s) started by the {self.backend.name} backend",
            expected_version=job.resource_version,
        )

    def _watch(self, job: JobRecord, node_states: dict[str, NodeState]) -> None:
        known_rows = self.store.list_tasks(job.id)
        lost_nodes = sorted(
            {
                t.node
                for t in known_rows
                if node_states.get(t.node) not in (NodeState.READY, NodeState.CORDONED, NodeState.DRAINING)
            }
        )
        if lost_nodes:
            self.backend.stop(job.id, self.stop_grace)
            self._transition(
                job.id,
                JobState.RECOVERING,
                "NodeLost",
                f"node(s) {', '.join(lost_nodes)} stopped responding; moving the job",
            )
            return
        draining = sorted({t.node for t in known_rows if node_states.get(t.node) is NodeState.DRAINING})
        if draining:
            # A drain (or a spot interruption notice) moves the job the way a preemption does: the
            # notice file lets it checkpoint at a step boundary, then it stops and is placed again
            # elsewhere, without spending a restart.
            self._transition(
                job.id,
                JobState.PREEMPTED,
                "NodeDraining",
                f"node(s) {', '.join(draining)} are draining; checkpointing and moving the job",
                expected_version=job.resource_version,
            )
            return
        known = [
            TaskStatus(job.id, t.rank, TaskPhase(t.phase), t.exit_code, t.message, t.handle)
            for t in known_rows
        ]
        statuses = self.backend.poll(job.id, known)
        rows = {t.rank: t for t in known_rows}
        for st in statuses:
            row = rows.get(st.rank)
            # A serving task's address may only be known once it runs (a Kubernetes pod's IP), and
            # its port once it listens (a task that picked its own).
            endpoint = _endpoint(row.endpoint, st.address, st.port) if row else None
            if row and (
                row.phase != st.phase.value
                or row.exit_code != st.exit_code
                or (endpoint is not None and endpoint != row.endpoint)
            ):
                self.store.put_task(
                    job.id,
                    st.rank,
                    pod_set=row.pod_set,
                    node=row.node,
                    phase=st.phase.value,
                    exit_code=st.exit_code,
                    message=st.message,
                    handle=st.handle or row.handle,
                    endpoint=endpoint,
                )
                if (
                    job.kind == "FederatedJob"
                    and row.pod_set != "server"
                    and st.phase in FINISHED_PHASES
                    and st.phase is not TaskPhase.SUCCEEDED
                ):
                    self.store.add_event(
                        job.id,
                        "PartyLost",
                        f"{row.pod_set} (rank {st.rank}) "
                        f"{st.message or f'exited with code {st.exit_code}'}; the federation goes on "
                        "without it",
                        type="Warning",
                    )
        if job.kind == "FederatedJob":
            self._settle_federation(job, statuses, rows)
            return
        silent, hung = self._stale_heartbeats(job, [s.rank for s in statuses if s.phase is TaskPhase.RUNNING])
        if silent or hung:
            self.backend.stop(job.id, self.stop_grace)
            if silent:
                reason, text = (
                    "HeartbeatLost",
                    (
                        f"rank(s) {', '.join(map(str, silent))} sent no heartbeat for "
                        f"over {self.heartbeat_timeout:g} s"
                    ),
                )
            else:
                reason, text = (
                    "Hung",
                    (
                        f"rank(s) {', '.join(map(str, hung))} made no training progress for "
                        f"over {self.hang_timeout:g} s"
                    ),
                )
            self._transition(job.id, JobState.RECOVERING, reason, text, expected_version=job.resource_version)
            return
        failed = [s for s in statuses if s.phase is TaskPhase.FAILED]
        lost = [s for s in statuses if s.phase is TaskPhase.LOST]
        if failed:
            first = min(failed, key=lambda s: s.rank)
            self.backend.stop(job.id, self.stop_grace)
            self._transition(
                job.id,
                JobState.FAILED,
                "TaskFailed",
                f"rank {first.rank} failed: {first.message or f'exit code {first.exit_code}'}",
                expected_version=job.resource_version,
            )
        elif lost:
            self.backend.stop(job.id, self.stop_grace)
            ranks = ", ".join(str(s.rank) for s in lost)
            self._transition(
                job.id,
                JobState.RECOVERING,
                "TaskLost",
                f"rank(s) {ranks} vanished without an exit code",
                expected_version=job.resource_version,
            )
        elif statuses and all(s.phase is TaskPhase.SUCCEEDED for s in statuses):
            self._transition(
                job.id,
                JobState.SUCCEEDED,
                "Completed",
                f"all {len(statuses)} task(s) exited 0",
                expected_version=job.resource_version,
            )

    def _settle_federation(self, job: JobRecord, statuses: list[TaskStatus], rows: dict[int, Any]) -> None:
        """A federation survives the loss of parties (secure aggregation completes the round without
        them): the server task alone decides the job. When it finishes, the parties still running
        are stopped; a lost server is recovered like any lost task."""
        server = [s for s in statuses if rows.get(s.rank) is not None and rows[s.rank].pod_set == "server"]
        if not server:
            return
        st = server[0]
        if st.phase is TaskPhase.SUCCEEDED:
            parties = [s for s in statuses if s is not st]
            running = [s for s in parties if s.phase not in FINISHED_PHASES]
            # Parties write their own results after the last round (a vertical guest its model and
            # AUC): they get a grace period to finish before the ones still running are stopped.
            if running:
                # when the server's row last changed: the round it was first seen finished
                finished_at = next(t.updated_at for t in self.store.list_tasks(job.id) if t.rank == st.rank)
                if self.clock() - finished_at < FEDERATION_PARTY_GRACE_S:
                    return
            self.backend.stop(job.id, self.stop_grace)
            done = sum(s.phase is TaskPhase.SUCCEEDED for s in parties)
            self._transition(
                job.id,
                JobState.SUCCEEDED,
                "Completed",
                f"the server finished; {done} of {len(parties)} parties to the end",
                expected_version=job.resource_version,
            )
        elif st.phase is TaskPhase.FAILED:
            self.backend.stop(job.id, self.stop_grace)
            self._transition(
                job.id,
                JobState.FAILED,
                "TaskFailed",
                f"the federation server (rank {st.rank}) failed: {st.message or f'exit code {st.exit_code}'}",
                expected_version=job.resource_version,
            )
        elif st.phase is TaskPhase.LOST:
            self.backend.stop(job.id, self.stop_grace)
            self._transition(
                job.id,
                JobState.RECOVERING,
                "TaskLost",
                f"the federation server (rank {st.rank}) vanished without an exit code",
                expected_version=job.resource_version,
            )

    def _record_final(self, job: JobRecord) -> None:
        rows = self.store.list_tasks(job.id)
        known = [
            TaskStatus(job.id, t.rank, TaskPhase(t.phase), t.exit_code, t.message, t.handle) for t in rows
        ]
        if not known:
            return
        for st in self.backend.poll(job.id, known):
            row = next((r for r in rows if r.rank == st.rank), None)
            if row and st.phase in FINISHED_PHASES:
                self.store.put_task(
                    job.id,
                    st.rank,
                    pod_set=row.pod_set,
                    node=row.node,
                    phase=st.phase.value,
                    exit_code=st.exit_code,
                    message=st.message,
                    handle=row.handle,
                )
