"""The backend interface: launch placed tasks, stop them, watch them, read their logs.

Public methods live here and carry timing and error translation (the template method SkyPilot
uses); each backend implements the ``_`` hooks. Backends are picked by name from ``registry``.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from modelplane.core.errors import ModelplaneError

# Where a serving task writes the address it listens on, once it does (``{"host": ..., "port": ...}``):
# set by a backend that reads it back, so that a task told to bind port 0 can say which port it got.
ADDRESS_FILE_ENV = "MODELPLANE_ADDRESS_FILE"
LOOPBACK = "127.0.0.1"


class BackendError(ModelplaneError):
    status_code = 502


class TaskPhase(StrEnum):
    STARTING = "Starting"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    LOST = "Lost"  # the backend can no longer see the task (node gone, process vanished)


FINISHED_PHASES = frozenset({TaskPhase.SUCCEEDED, TaskPhase.FAILED, TaskPhase.LOST})


@dataclass(frozen=True)
class TaskLaunch:
    """Everything a backend needs to start one task of a placed job."""

    job_id: str
    job_name: str
    pod_set: str
    index: int
    rank: int
    world_size: int
    node: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    devices: tuple[int, ...] = ()
    gpu_milli: int = 0
    accelerator_model: str | None = None
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    image: str | None = None


@dataclass(frozen=True)
class TaskStatus:
    job_id: str
    rank: int
    phase: TaskPhase
    exit_code: int | None = None
    message: str = ""
    handle: str = ""  # backend-specific identity, stored so that a restarted control plane can re-adopt
    address: str = ""  # the host the task is reached at (Ray: its node's IP); empty: the control plane's host
    port: int | None = None  # the port the task reported it listens on (ADDRESS_FILE_ENV); None: none yet


def reported_port(text: str) -> int | None:
    """The port in what a serving task wrote to its address file; None while it is absent, partial
    or not a port (the task writes it atomically, but a task of another kind may write anything)."""
    try:
        port = json.loads(text).get("port")
    except (ValueError, AttributeError):
        return None
    return port if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536 else None


class Backend(ABC):
    name: str = "abstract"
    # Whether a serving task binds a port of its own (the control plane passes port 0) and reports
    # it through ADDRESS_FILE_ENV: a port free on the control plane's host says nothing about
    # another machine, so a backend whose tasks run elsewhere lets them pick.
    tasks_choose_ports: bool = False

    def __init__(self) -> None:
        self.last_launch_seconds: float = 0.0

    # -- public API: timing and error translation around the hooks --------------------------------

    def launch(self, tasks: Sequence[TaskLaunch]) -> list[TaskStatus]:
        start = time.perf_counter()
        try:
            return self._launch(tasks)
        except ModelplaneError:
            raise
        except Exception as exc:  # translate the backend's own exception into one with a fix
            raise BackendError(
                f"{self.name} backend could not launch: {exc}", hint="see the control plane log for details"
            ) from exc
        finally:
            self.last_launch_seconds = time.perf_counter() - start

    def task_hosts(self, tasks: Sequence[TaskLaunch]) -> dict[int, str]:
        """Per rank, the host name or IP address the other tasks of its job dial to reach it.

        Asked before launch, so that what the control plane hands out names the addresses really
        dialled: MASTER_ADDR (rank 0's), a federation's address book, and the subjectAltNames of
        its certificates (a party verifies the server's certificate against the name it dials).
        The backend addresses the tasks the same way when it launches them.
        """
        try:
            return self._task_hosts(tasks)
        except ModelplaneError:
            raise
        except Exception as exc:
            raise BackendError(
                f"{self.name} backend could not say where the tasks will run: {exc}",
                hint="see the control plane log for details",
            ) from exc

    def stop(self, job_id: str, grace_seconds: float = 10.0) -> None:
        self._stop(job_id, grace_seconds)

    def poll(self, job_id: str, known: Sequence[TaskStatus]) -> list[TaskStatus]:
        """Current status of a job's tasks. ``known`` are the statuses last stored (with handles),
        so that a backend restarted since the launch can still find its tasks, or report them LOST."""
        return self._poll(job_id, known)

    def read_logs(self, job_id: str, rank: int, offset: int = 0) -> tuple[str, int]:
        """Log text of one task from byte ``offset``, and the offset to continue from."""
        return self._read_logs(job_id, rank, offset)

    # -- hooks ------------------------------------------------------------------------------------

    def _task_hosts(self, tasks: Sequence[TaskLaunch]) -> dict[int, str]:
        """Default: every task runs on the control plane's own machine."""
        return {t.rank: LOOPBACK for t in tasks}

    @abstractmethod
    def _launch(self, tasks: Sequence[TaskLaunch]) -> list[TaskStatus]: ...

    @abstractmethod
    def _stop(self, job_id: str, grace_seconds: float) -> None: ...

    @abstractmethod
    def _poll(self, job_id: str, known: Sequence[TaskStatus]) -> list[TaskStatus]: ...

    @abstractmethod
    def _read_logs(self, job_id: str, rank: int, offset: int) -> tuple[str, int]: ...


_REGISTRY: dict[str, Callable[..., Backend]] = {}


def register_backend(name: str) -> Callable[[Callable[..., Backend]], Callable[..., Backend]]:
    def deco(factory: Callable[..., Backend]) -> Callable[..., Backend]:
        _REGISTRY[name] = factory
        return factory

    return deco


# Backends shipped with modelplane register themselves when their module is first imported; their
# SDKs (ray, kubernetes) are imported only when the backend is used.
_BUILTIN_MODULES = {
    "local": "modelplane.backends.local",
    "ray": "modelplane.backends.ray",
    "kubernetes": "modelplane.backends.kubernetes",
}


def create_backend(name: str, **kwargs: object) -> Backend:
    if name == "local" and name not in _REGISTRY:
        import modelplane.backends.local  # noqa: F401  (registers itself)
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        import importlib

        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _REGISTRY:
        raise ModelplaneError(
            f"unknown backend {name!r}",
            hint=f"set MODELPLANE_BACKEND to one of: {', '.join(sorted(set(_REGISTRY) | set(_BUILTIN_MODULES)))}",
        )
    return _REGISTRY[name](**kwargs)
