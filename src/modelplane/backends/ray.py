"""The Ray backend: each placed job becomes a Ray placement group pinned to the chosen Ray nodes,
and each task a detached Ray actor (``ray_runner.TaskRunner``) that runs the command.

modelplane stays the scheduler of record: every bundle of the placement group carries a label
selector on ``ray.io/node-id``, so Ray puts it on exactly the node our scheduler chose, and the
group's strategy says the same thing in Ray's terms (STRICT_PACK when every task shares one node,
STRICT_SPREAD when each has its own, PACK otherwise). Device indices are ours too: the task's
visibility variable (CUDA_VISIBLE_DEVICES, ...) is set from the placement, not from Ray.

What the control plane keeps, under ``<state_dir>/ray/jobs/<job_id>/``:

- ``meta.json``     the placement group's name and each rank's actor name and Ray node
- ``<rank>.log``    the task's log, copied from the actor on every poll (so it survives the node)
- ``<rank>.exit``   the final status, written once the task ended and its actor was let go

Handles are ``ray:<namespace>/<actor name>``; actors and placement groups are detached and named,
so a restarted control plane finds them again. A task whose actor died without an exit code
(its Ray node died, the actor was killed) is LOST, which the job controller turns into recovery.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from modelplane.backends import ray_runner
from modelplane.backends.base import (
    FINISHED_PHASES,
    LOOPBACK,
    Backend,
    BackendError,
    TaskLaunch,
    TaskPhase,
    TaskStatus,
    register_backend,
)
from modelplane.backends.local import _complete_utf8_prefix, _local_layout, task_environment
from modelplane.backends.ray_inventory import NODE_ID_LABEL, node_name, node_specs, ray_device_resource
from modelplane.core.accelerators import family_of_model
from modelplane.core.errors import InvalidSpec, NotFound
from modelplane.core.node import NodeSpec

INSTALL_HINT = "install the Ray extra: pip install 'modelplane[ray]'"
HANDLE_PREFIX = "ray:"
ADDRESS_ENV = "MODELPLANE_RAY_ADDRESS"


def import_ray() -> Any:
    """The ``ray`` module, or an error saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise BackendError(f"the ray backend needs the ray package ({exc})", hint=INSTALL_HINT) from exc
    return ray


def placement_strategy(nodes: Sequence[str]) -> str:
    """Ray's name for what the placement demands of the nodes it chose (one entry per task)."""
    distinct = len(set(nodes))
    if distinct == 1:
        return "STRICT_PACK"
    if distinct == len(nodes):
        return "STRICT_SPREAD"
    return "PACK"


def _key(job_id: str) -> str:
    if not job_id or job_id in (".", ".."):
        raise InvalidSpec(
            f"job id {job_id!r} cannot name a directory", hint="use a non-empty job id", field="job_id"
        )
    return quote(job_id, safe="-_.")


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@register_backend("ray")
class RayBackend(Backend):
    """Runs placed tasks on a Ray cluster; see the module docstring."""

    name = "ray"
    tasks_choose_ports = True  # a port free here says nothing about a Ray node's

    def __init__(
        self,
        address: str | None = None,
        state_dir: Path | str | None = None,
        *,
        namespace: str = "modelplane",
        cpus_per_task: float = 0.01,
        placement_timeout_s: float = 60.0,
        start_timeout_s: float = 120.0,
        rpc_timeout_s: float = 5.0,
        log_chunk_bytes: int = 1 << 20,
    ) -> None:
        super().__init__()
        self.address = address or os.environ.get(ADDRESS_ENV) or "auto"
        root = Path(state_dir).expanduser() if state_dir else Path(tempfile.mkdtemp(prefix="modelplane-ray-"))
        self.state_dir = root.resolve() / "ray"
        self.namespace = namespace
        self.cpus_per_task = cpus_per_task
        self.placement_timeout_s = placement_timeout_s
        self.start_timeout_s = start_timeout_s
        self.rpc_timeout_s = rpc_timeout_s
        self.log_chunk_bytes = log_chunk_bytes
        self._actors: dict[str, Any] = {}
        self._lock = threading.RLock()
        try:
            (self.state_dir / "jobs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(
                f"ray backend cannot use state directory {self.state_dir}: {exc.strerror}",
                hint="point MODELPLANE_STATE_DIR at a writable directory",
            ) from exc

    # -- connection --------------------------------------------------------------------------------

    def ray(self) -> Any:
        """The connected ``ray`` module (connects on first use)."""
        ray = import_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "namespace": self.namespace,
                "logging_level": "ERROR",
                "log_to_driver": False,
                "configure_logging": False,
            }
            try:
                if self.address == "local":
                    ray.init(**kwargs)
                else:
                    ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise BackendError(
                    f"cannot connect to the Ray cluster at {self.address!r}: {exc}",
                    hint=f"start one (ray start --head) or set {ADDRESS_ENV} to its "
                    "address (host:port, auto, or ray://host:10001)",
                ) from exc
        # Workers get the runner's code with the actor, so the cluster needs no modelplane install.
        ray.cloudpickle.register_pickle_by_value(ray_runner)
        return ray

    def ray_nodes(self) -> list[dict[str, Any]]:
        return list(self.ray().nodes())

    def import_nodes(self) -> list[NodeSpec]:
        """The alive Ray nodes as NodeSpecs (resources, labels, accelerator types)."""
        return node_specs(self.ray_nodes())

    def alive_node_names(self) -> list[str]:
        """Names of the Ray nodes alive now: what a node agent heartbeats for under this backend, so
        that a node Ray lost goes NotReady and its jobs move."""
        return sorted(node_name(n) for n in self.ray_nodes() if n.get("Alive"))

    def _nodes_by_name(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for n in self.ray_nodes():
            if n.get("Alive"):
                out[node_name(n)] = n
                out[str(n["NodeID"])] = n  # a placement may name a Ray node by its id
        return out

    # -- paths -------------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.state_dir / "jobs" / _key(job_id)

    def log_path(self, job_id: str, rank: int) -> Path:
        return self.job_dir(job_id) / f"{rank}.log"

    def _exit_path(self, job_id: str, rank: int) -> Path:
        return self.job_dir(job_id) / f"{rank}.exit"

    def _meta(self, job_id: str) -> dict[str, Any] | None:
        return _read_json(self.job_dir(job_id) / "meta.json")

    # -- launch ------------------------------------------------------------------------------------

    def _task_hosts(self, tasks: Sequence[TaskLaunch]) -> dict[int, str]:
        """Each task's Ray node IP (``NodeManagerAddress``): where a task there listens and is dialled."""
        nodes = self._nodes_by_name()
        return {t.rank: _node_ip(nodes, t.node) for t in tasks}

    def _bundle(self, task: TaskLaunch, node: dict[str, Any]) -> dict[str, float]:
        bundle = {"CPU": self.cpus_per_task}
        if task.devices or task.gpu_milli:
            key = ray_device_resource(family_of_model(task.accelerator_model or ""))
            want = max(float(len(task.devices)), task.gpu_milli / 1000.0)
            if want and (node.get("Resources") or {}).get(key, 0) >= want:
                bundle[key] = want
        return bundle

    def _launch(self, tasks: Sequence[TaskLaunch]) -> list[TaskStatus]:
        by_job: dict[str, list[TaskLaunch]] = defaultdict(list)
        for t in tasks:
            by_job[t.job_id].append(t)
        out: list[TaskStatus] = []
        for job_id, job_tasks in by_job.items():
            out.extend(self._launch_job(job_id, sorted(job_tasks, key=lambda t: t.rank)))
        return out

    def _launch_job(self, job_id: str, tasks: list[TaskLaunch]) -> list[TaskStatus]:
        ray = self.ray()
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if self._meta(job_id) is not None:  # leftovers of an earlier attempt: end them first
            self._stop(job_id, 0.0)
        nodes = self._nodes_by_name()
        job_dir = self.job_dir(job_id)
        job_dir.mkdir(parents=True, exist_ok=True)
        for stale in job_dir.iterdir():
            stale.unlink(missing_ok=True)
        missing = sorted({t.node for t in tasks if t.node not in nodes})
        if missing:
            # Placed on a node that died since (or was never imported from this cluster): nothing is
            # started, and the job is reported lost so that it is placed again once the node is NotReady.
            why = (
                f"Ray has no alive node named {', '.join(missing)} (dead, or not imported from this "
                "cluster: nodes are named by their modelplane.io/node-name label or ray-<ip>-<id>)"
            )
            return [TaskStatus(job_id, t.rank, TaskPhase.LOST, message=why) for t in tasks]
        nonce = uuid.uuid4().hex[:8]
        pg_name = f"mp-{_key(job_id)}-{nonce}"
        bundles = [self._bundle(t, nodes[t.node]) for t in tasks]
        selectors = [{NODE_ID_LABEL: str(nodes[t.node]["NodeID"])} for t in tasks]
        strategy = placement_strategy([str(nodes[t.node]["NodeID"]) for t in tasks])
        pg = placement_group(
            bundles, strategy=strategy, name=pg_name, lifetime="detached", bundle_label_selector=selectors
        )
        ranks = {
            str(t.rank): {
                "actor": f"{pg_name}-r{t.rank}",
                "node": t.node,
                "node_id": str(nodes[t.node]["NodeID"]),
            }
            for t in tasks
        }
        _write_json(job_dir / "meta.json", {"placement_group": pg_name, "strategy": strategy, "ranks": ranks})
        ready, _ = ray.wait([pg.ready()], timeout=self.placement_timeout_s)
        if not ready:  # the nodes died or filled up since the scheduler chose them: place the job again
            remove_placement_group(pg)
            why = (
                f"Ray could not reserve the placement within {self.placement_timeout_s:g}s ({strategy}, "
                f"bundles {bundles} on nodes {sorted({t.node for t in tasks})}); see `ray status`"
            )
            return [TaskStatus(job_id, t.rank, TaskPhase.LOST, message=why) for t in tasks]
        master_addr = _node_ip(nodes, tasks[0].node)  # tasks are sorted: rank 0's node, as task_hosts says
        layout = _local_layout(tasks)
        runner_cls = ray.remote(ray_runner.TaskRunner)
        starts = []
        for i, t in enumerate(tasks):
            env = task_environment(_with_master(t, master_addr), *layout[(t.job_id, t.rank)], base={})
            extra = {k: v for k, v in bundles[i].items() if k != "CPU"}
            gpus = extra.pop("GPU", 0.0)
            actor = runner_cls.options(
                name=ranks[str(t.rank)]["actor"],
                namespace=self.namespace,
                lifetime="detached",
                max_restarts=0,
                max_concurrency=4,
                num_cpus=bundles[i]["CPU"],
                num_gpus=gpus,
                resources=extra or None,
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i),
            ).remote(job_id, t.rank)
            with self._lock:
                self._actors[ranks[str(t.rank)]["actor"]] = actor
            self.log_path(job_id, t.rank).touch()
            starts.append(actor.start.remote(list(t.command), env, t.working_dir))
        ready, _ = ray.wait(starts, num_returns=len(starts), timeout=self.start_timeout_s)
        if len(ready) < len(starts):
            self._stop(job_id, 0.0)
            raise BackendError(
                f"Ray actors for job {job_id} did not start within {self.start_timeout_s:g}s",
                hint="check `ray status` and the Ray logs of the chosen nodes",
            )
        statuses = []
        for t, ref in zip(tasks, starts, strict=True):
            info = ray.get(ref)
            handle = f"{HANDLE_PREFIX}{self.namespace}/{ranks[str(t.rank)]['actor']}"
            if not info.get("started"):
                statuses.append(
                    TaskStatus(
                        job_id,
                        t.rank,
                        TaskPhase.FAILED,
                        exit_code=127,
                        handle=handle,
                        message=f"{info.get('error')}; fix the job's command or workingDir",
                    )
                )
            else:
                statuses.append(
                    TaskStatus(
                        job_id,
                        t.rank,
                        TaskPhase.RUNNING,
                        handle=handle,
                        message=f"pid {info.get('task_pid')} on {t.node} ({info.get('ip')})",
                        address=str(info.get("ip") or ""),
                    )
                )
        return statuses

    # -- watching ----------------------------------------------------------------------------------

    def _actor(self, name: str) -> Any | None:
        with self._lock:
            if name in self._actors:
                return self._actors[name]
        try:
            actor = self.ray().get_actor(name, namespace=self.namespace)
        except ValueError:
            return None
        with self._lock:
            self._actors[name] = actor
        return actor

    def _actor_name(self, job_id: str, rank: int, handle: str) -> str | None:
        if handle.startswith(HANDLE_PREFIX) and "/" in handle:
            return handle.split("/", 1)[1]
        meta = self._meta(job_id) or {}
        entry = (meta.get("ranks") or {}).get(str(rank))
        return str(entry["actor"]) if entry else None

    def _node_of(self, job_id: str, rank: int) -> tuple[str, str]:
        meta = self._meta(job_id) or {}
        entry = (meta.get("ranks") or {}).get(str(rank)) or {}
        return str(entry.get("node", "?")), str(entry.get("node_id", ""))

    def _append_log(self, job_id: str, rank: int, data: bytes) -> None:
        if data:
            with open(self.log_path(job_id, rank), "ab") as fh:
                fh.write(data)

    def _mirrored(self, job_id: str, rank: int) -> int:
        try:
            return self.log_path(job_id, rank).stat().st_size
        except FileNotFoundError:
            return 0

    def _sync(self, job_id: str, rank: int, actor: Any, timeout: float) -> dict[str, Any]:
        """Copy the actor's new log bytes here; return its last snapshot (raises Ray's errors)."""
        ray = self.ray()
        while True:
            snap: dict[str, Any] = ray.get(
                actor.snapshot.remote(self._mirrored(job_id, rank), self.log_chunk_bytes), timeout=timeout
            )
            self._append_log(job_id, rank, snap["log"])
            if snap["returncode"] is None or not snap["log"] or self._mirrored(job_id, rank) >= snap["size"]:
                return snap

    def _finish(self, job_id: str, rank: int, handle: str, snap: dict[str, Any], actor: Any) -> TaskStatus:
        prefix = "stopped on request: " if snap.get("stopped") else ""
        phase = TaskPhase.SUCCEEDED if snap["returncode"] == 0 else TaskPhase.FAILED
        status = TaskStatus(
            job_id,
            rank,
            phase,
            exit_code=snap["exit_code"],
            handle=handle,
            message=prefix + str(snap["message"]),
        )
        self._record(status)
        with contextlib.suppress(Exception):  # the actor may be gone already; nothing to clean then
            self.ray().get(actor.cleanup.remote(), timeout=self.rpc_timeout_s)
        with contextlib.suppress(Exception):
            self.ray().kill(actor, no_restart=True)
        with self._lock:
            self._actors = {k: v for k, v in self._actors.items() if v is not actor}
        return status

    def _record(self, status: TaskStatus) -> None:
        _write_json(
            self._exit_path(status.job_id, status.rank),
            {
                "phase": status.phase.value,
                "exit_code": status.exit_code,
                "message": status.message,
                "handle": status.handle,
            },
        )

    def _recorded(self, job_id: str, rank: int) -> TaskStatus | None:
        rec = _read_json(self._exit_path(job_id, rank))
        if rec is None:
            return None
        return TaskStatus(
            job_id,
            rank,
            TaskPhase(rec["phase"]),
            exit_code=rec.get("exit_code"),
            message=str(rec.get("message", "")),
            handle=str(rec.get("handle", "")),
        )

    def _lost(self, job_id: str, rank: int, handle: str, why: str) -> TaskStatus:
        node, node_id = self._node_of(job_id, rank)
        alive = {str(n["NodeID"]): n for n in self.ray_nodes() if n.get("Alive")}
        if node_id and node_id not in alive:
            dead = next((n for n in self.ray_nodes() if str(n.get("NodeID")) == node_id), {})
            reason = dead.get("DeathReasonMessage") or "no longer in the cluster"
            why = f"Ray node {node} ({node_id[:8]}) died: {reason}"
        status = TaskStatus(job_id, rank, TaskPhase.LOST, handle=handle, message=why)
        self._record(status)
        return status

    def _status_of(self, job_id: str, rank: int, handle: str, previous: TaskPhase) -> TaskStatus:
        recorded = self._recorded(job_id, rank)
        if recorded is not None:
            return recorded
        name = self._actor_name(job_id, rank, handle)
        handle = handle or (f"{HANDLE_PREFIX}{self.namespace}/{name}" if name else "")
        if name is None:
            return TaskStatus(
                job_id,
                rank,
                TaskPhase.LOST,
                handle=handle,
                message="no Ray actor handle or record for this task",
            )
        actor = self._actor(name)
        if actor is None:
            return self._lost(
                job_id, rank, handle, f"Ray actor {name} is gone without recording an exit code"
            )
        exc_mod = import_ray().exceptions
        try:
            snap = self._sync(job_id, rank, actor, self.rpc_timeout_s)
        except exc_mod.ActorDiedError as exc:
            with self._lock:
                self._actors.pop(name, None)
            return self._lost(job_id, rank, handle, f"Ray actor {name} died: {str(exc).splitlines()[0]}")
        except (exc_mod.GetTimeoutError, exc_mod.ActorUnavailableError) as exc:
            phase = previous if previous not in FINISHED_PHASES else TaskPhase.RUNNING
            return TaskStatus(
                job_id,
                rank,
                phase,
                handle=handle,
                message=f"Ray actor {name} did not answer: {type(exc).__name__}",
            )
        if snap["returncode"] is None:
            node, _ = self._node_of(job_id, rank)
            return TaskStatus(
                job_id,
                rank,
                TaskPhase.RUNNING,
                handle=handle,
                message=f"running on {node}",
                address=str(snap.get("ip") or ""),
                port=snap.get("port"),
            )
        return self._finish(job_id, rank, handle, snap, actor)

    def _poll(self, job_id: str, known: Sequence[TaskStatus]) -> list[TaskStatus]:
        if not known:
            meta = self._meta(job_id) or {}
            known = [
                TaskStatus(job_id, int(r), TaskPhase.STARTING)
                for r in sorted(meta.get("ranks") or {}, key=int)
            ]
        out = [
            s if s.phase in FINISHED_PHASES else self._status_of(job_id, s.rank, s.handle, s.phase)
            for s in known
        ]
        if out and all(s.phase in FINISHED_PHASES for s in out):
            self._remove_placement_group(job_id)
        return out

    def _remove_placement_group(self, job_id: str) -> None:
        meta = self._meta(job_id)
        if not meta or meta.get("removed"):
            return
        from ray.util.placement_group import get_placement_group, remove_placement_group

        self.ray()
        with contextlib.suppress(ValueError, KeyError):
            remove_placement_group(get_placement_group(str(meta["placement_group"])))
        meta["removed"] = True
        _write_json(self.job_dir(job_id) / "meta.json", meta)

    # -- stopping ----------------------------------------------------------------------------------

    def _stop(self, job_id: str, grace_seconds: float) -> None:
        meta = self._meta(job_id)
        if meta is None:
            return
        ray = self.ray()
        exc_mod = ray.exceptions
        pending = []
        for rank_s, entry in (meta.get("ranks") or {}).items():
            rank = int(rank_s)
            if self._recorded(job_id, rank) is not None:
                continue
            actor = self._actor(str(entry["actor"]))
            handle = f"{HANDLE_PREFIX}{self.namespace}/{entry['actor']}"
            if actor is None:
                self._record(
                    TaskStatus(
                        job_id,
                        rank,
                        TaskPhase.FAILED,
                        handle=handle,
                        message="stopped on request: Ray actor already gone",
                    )
                )
                continue
            pending.append((rank, handle, actor, actor.terminate.remote(grace_seconds)))
        for rank, handle, actor, ref in pending:
            try:
                ray.get(ref, timeout=grace_seconds + self.rpc_timeout_s)
                snap = self._sync(job_id, rank, actor, self.rpc_timeout_s)
                self._finish(job_id, rank, handle, {**snap, "stopped": True}, actor)
            except (exc_mod.RayError, exc_mod.GetTimeoutError) as exc:
                self._record(
                    TaskStatus(
                        job_id,
                        rank,
                        TaskPhase.FAILED,
                        handle=handle,
                        message=f"stopped on request: {type(exc).__name__}",
                    )
                )
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
            with self._lock:
                self._actors.pop(handle.split("/", 1)[1], None)
        self._remove_placement_group(job_id)

    # -- logs --------------------------------------------------------------------------------------

    def _read_logs(self, job_id: str, rank: int, offset: int) -> tuple[str, int]:
        if offset < 0:
            raise InvalidSpec(
                f"log offset must be 0 or more, got {offset}", hint="start from offset 0", field="offset"
            )
        path = self.log_path(job_id, rank)
        if not path.exists():
            raise NotFound(
                f"no log for rank {rank} of job {job_id!r}",
                hint="the task has not been launched by this Ray backend",
            )
        if self._recorded(job_id, rank) is None:  # still running: fetch what is new first
            name = self._actor_name(job_id, rank, "")
            actor = self._actor(name) if name else None
            if actor is not None:
                with contextlib.suppress(Exception):
                    self._sync(job_id, rank, actor, self.rpc_timeout_s)
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            offset = min(offset, size)
            fh.seek(offset)
            data = fh.read(max(self.log_chunk_bytes, 1))
            keep = _complete_utf8_prefix(data)
            if keep == 0 and data:
                data += fh.read(3)
                keep = _complete_utf8_prefix(data)
        return data[:keep].decode("utf-8", errors="replace"), offset + keep


def _node_ip(nodes: dict[str, dict[str, Any]], node: str) -> str:
    """The IP address of an alive Ray node; the loopback for one Ray no longer has (its job is
    reported LOST at launch, before anything starts, so nothing dials it)."""
    entry = nodes.get(node)
    return str(entry["NodeManagerAddress"]) if entry else LOOPBACK


def _with_master(task: TaskLaunch, master_addr: str) -> TaskLaunch:
    return replace(task, master_addr=master_addr)
