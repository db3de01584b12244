"""A party's Flower SuperNode with its ClientApp kept warm in the same process.

Why not ``flower-supernode`` as it ships: Flower 1.42 runs every message in a fresh
``flwr-clientapp`` process (Python start, flwr and numpy imports, the FAB unpacked again, the shard
read again) and its SuperNode waits a fixed 3 s before asking the SuperLink again whenever it
found nothing to do. A SecAgg+ round is four message round trips where plain FedAvg is one, so
those fixed costs, paid per message, made secure aggregation 2.5x slower than plain rounds for
reasons that have nothing to do with cryptography. Here:

* the SuperNode runs with ``--isolation process`` (Flower's documented mode for an executor
  that the operator starts), and a thread of this process is that executor: it runs each task's
  ClientApp in process, with Flower's own task protocol (pull the task input, run, push the reply
  and the task output, heartbeat meanwhile) answered by the Runtime API's handlers on this
  process's state, not over HTTP (:class:`InProcessRuntime`);
* the ClientApp it runs is modelplane's, imported once, never code from the FAB the server sent:
  a party runs the training code it installed, not code the server ships (the FAB is still
  checked to be ours, so a foreign run is answered with an error, not trained);
* the SuperNode's idle wait follows the federation's pace (:class:`Pacer`): 50 ms right after a
  message, growing to 1 s while nothing comes, and the executor is woken the moment a message is
  stored instead of polling for it.

``python -m modelplane.privacy.horizontal.supernode [flower-supernode options]``; ``client.py``
starts it. The isolation mode is set here and may not be given; the Runtime API listens on
127.0.0.1 and a free port unless ``--host`` / ``--port`` say otherwise (unused by the executor, it
serves TLS when given ``--ssl-certfile`` / ``--ssl-keyfile`` / ``--ssl-ca-certfile``).
"""

from __future__ import annotations

import functools
import importlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from modelplane.privacy.horizontal.pulls import prompt_object_pulls

FAB_NAME = "modelplane-fl"  # [project].name in app/pyproject.toml: the only app these SuperNodes run


@dataclass
class Pacer:
    """Idle waits that start short after activity and grow geometrically while nothing happens.

    A federation is bursty: the next message follows the last one within a fraction of a second
    (the next SecAgg+ stage, the next round), then nothing comes for a long time (the run is
    over, or a slow party holds everyone). Short waits right after activity keep latency low;
    growing waits keep an idle SuperNode from hammering the SuperLink.
    """

    fast: float = 0.05
    slow: float = 1.0
    growth: float = 1.25
    _next: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if not 0 < self.fast <= self.slow or self.growth < 1:
            raise ValueError(
                f"need 0 < fast <= slow and growth >= 1, got {self.fast}, {self.slow}, {self.growth}"
            )
        self._next = self.fast

    def active(self) -> None:
        """Something happened: the next waits are short again."""
        self._next = self.fast

    def idle(self) -> float:
        """The next wait while idle, in seconds (each call grows the one after, up to ``slow``)."""
        wait = self._next
        self._next = min(self.slow, self._next * self.growth)
        return wait


class _PacedTime:
    """Stands in for the ``time`` module inside Flower's SuperNode loop only.

    ``start_client_internal`` sleeps 3 s when the SuperLink had nothing and 0.5 s while it waits
    for a reply or an object; the first becomes the pacer's wait, the others a short poll of this
    process's own in-memory state. Everything else is the real ``time``.
    """

    def __init__(self, pacer: Pacer, poll: float = 0.01) -> None:
        self._pacer, self._poll = pacer, poll

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        time.sleep(self._pacer.idle() if seconds >= 3 else min(seconds, self._poll))


def pace_supernode(module: ModuleType, pacer: Pacer, on_message: Callable[[], None]) -> None:
    """Make Flower's SuperNode loop (``flwr.supernode.start_client_internal``) follow ``pacer``.

    Checked, not assumed: if a Flower upgrade renames what is patched here, this fails at start
    rather than silently falling back to 3 s waits.
    """
    pull = getattr(module, "_pull_and_store_message", None)
    if getattr(module, "time", None) is not time or not callable(pull):
        raise RuntimeError(
            f"{module.__name__} no longer has the loop this wrapper paces (written for flwr 1.42)"
        )

    def pull_and_store(*args: Any, **kwargs: Any) -> Any:
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            pacer.active()
            on_message()
        return run_id

    module.time = _PacedTime(pacer)  # type: ignore[attr-defined]
    module._pull_and_store_message = pull_and_store  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=8)
def _fab_name(fab_hash: str, fab_content: bytes) -> str:
    """The app's name in the FAB's pyproject.toml (read once per FAB: every message of a run carries the same)."""
    from flwr.common.config import get_fab_config

    try:
        return str(get_fab_config(fab_content)["project"]["name"])
    except (KeyError, ValueError, TypeError):
        return ""


class InProcessRuntime:
    """The SuperNode Runtime API's ClientApp calls, answered from this process's NodeState.

    Same request and response messages and the same handlers as Flower's HTTP Runtime API (so
    Flower's own ``pull_task_input`` / ``push_message`` / ``push_task_output`` run unchanged),
    without the HTTP: each message a party handles took some 2n+6 local HTTPS requests (task,
    input, message, its n objects, the reply and its objects, the output), which on a loaded
    machine cost more than the training itself, and a SecAgg+ round has four messages.
    The task is looked up by its token on every call, as the HTTP API does, so a task the
    SuperNode has expired is refused here too.
    """

    def __init__(self, state: Any, token: str | None = None) -> None:
        self.state, self.token = state, token

    def _task(self) -> Any:
        from flwr.supercore.error import ApiErrorCode, FlowerError

        task = self.state.get_task_by_token(self.token) if self.token else None
        if task is None:
            raise FlowerError(
                ApiErrorCode.RUNTIME_AUTHENTICATION_FAILED, "the task is no longer known to this SuperNode"
            )
        return task

    def _call(self, handler: str, request: Any) -> Any:
        from flwr.supernode.servicer.runtime import runtime_handlers

        return getattr(runtime_handlers, handler)(request, self.state, self._task())

    def AcquireTask(self, request: Any) -> Any:
        from flwr.supernode.servicer.runtime import runtime_handlers

        return runtime_handlers.acquire_task(request, self.state)

    def SendTaskHeartbeat(self, request: Any) -> Any:
        from flwr.supercore.servicer.runtime import runtime_handlers as core

        return core.send_task_heartbeat(request, self.state, self._task())

    def PullTaskInput(self, request: Any) -> Any:
        return self._call("pull_task_input", request)

    def PushTaskOutput(self, request: Any) -> Any:
        return self._call("push_task_output", request)

    def PullMessages(self, request: Any) -> Any:
        return self._call("pull_messages", request)

    def PushMessages(self, request: Any) -> Any:
        return self._call("push_messages", request)

    def PullObject(self, request: Any) -> Any:
        return self._call("pull_object", request)

    def PushObject(self, request: Any) -> Any:
        return self._call("push_object", request)

    def ConfirmMessageReceived(self, request: Any) -> Any:
        return self._call("confirm_message_received", request)

    def close(self) -> None:
        """Nothing to close: kept so that it stands in for Flower's HTTP client."""


class WarmExecutor:
    """Runs the SuperNode's ClientApp tasks in this process, one at a time, as they arrive."""

    def __init__(self, state: Any, app: Any, wake: threading.Event, idle_wait: float = 1.0) -> None:
        self.state, self.app, self.wake, self.idle_wait = state, app, wake, idle_wait

    def _client(self, token: str | None = None) -> InProcessRuntime:
        return InProcessRuntime(self.state, token)

    def serve_forever(self) -> None:
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore import log
        from flwr.supercore.constant import TaskType

        client = self._client()
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
        while True:
            try:
                res = client.AcquireTask(request)
                if res.HasField("task") and res.token:
                    self.run_task(res.token)
                    continue  # another may be waiting already
            except Exception as exc:  # keep serving: the SuperNode expires a task nobody finished
                log(logging.ERROR, "the ClientApp executor could not take or finish a task: %s", exc)
            self.wake.wait(self.idle_wait)
            self.wake.clear()

    def run_task(self, token: str) -> None:
        """Flower's ``run_clientapp`` protocol, with the ClientApp called in this process."""
        from flwr.app import Error, Message
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supercore import log
        from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
        from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

        client: Any = self._client(token)  # stands in for the RuntimeHttpClient Flower's functions take
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
        heartbeat.start()
        message = reply = context = None
        status, details = SubStatus.FAILED, "ClientApp task failed"
        try:
            message, context, _run, fab = pull_task_input(client)
            name = _fab_name(fab.hash_str, fab.content)
            if name != FAB_NAME:
                reply = Message(
                    Error(
                        code=ErrorCode.LOAD_CLIENT_APP_EXCEPTION,
                        reason=f"this SuperNode runs only the {FAB_NAME} app, not {name or 'an unknown app'}",
                    ),
                    reply_to=message,
                )
                details = "foreign app refused"
            else:
                reply = self.app(message=message, context=context)
                status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # the ClientApp's failure is the task's, not this process's
            log(logging.ERROR, "ClientApp raised an exception", exc_info=exc)
            details = f"{type(exc).__name__}: {exc}"
            if message is not None:
                reply = Message(
                    Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message
                )
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
            finally:
                push_task_output(client, context, status, details)
                heartbeat.stop()
                client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_runtime_api_then_executor(
    module: ModuleType, app: Any, wake: threading.Event, tries: int = 5
) -> None:
    """Start the executor on this SuperNode's own state once its Runtime API is up.

    The executor does not use the Runtime API (:class:`InProcessRuntime`), but Flower's SuperNode
    starts it regardless, on a port chosen free that another process can take before uvicorn binds
    it (several parties start at once on one machine): the bind is retried on a fresh port.
    """
    start_api = getattr(module, "_start_supernode_http_api", None)
    if not callable(start_api):
        raise RuntimeError(
            f"{module.__name__} no longer starts its Runtime API the way this wrapper expects "
            "(written for flwr 1.42)"
        )

    def start(config: Any, state_factory: Any) -> Any:
        for attempt in range(tries):
            try:
                started = start_api(config, state_factory)
                break
            except RuntimeError:  # "SuperNode Runtime HTTP API failed to start."
                if attempt == tries - 1:
                    raise
                config.port = _free_port()
        executor = WarmExecutor(state_factory.state(), app, wake)
        threading.Thread(target=executor.serve_forever, name="modelplane-clientapp", daemon=True).start()
        return started

    module._start_supernode_http_api = start  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--isolation" or a.startswith("--isolation=") for a in args):
        print(
            "error: this SuperNode sets --isolation itself (process, with its own executor)", file=sys.stderr
        )
        sys.exit(2)
    # Modules, not the same-named functions their packages re-export.
    cli = importlib.import_module("flwr.supernode.cli.flower_supernode")
    loop = importlib.import_module("flwr.supernode.start_client_internal")

    from modelplane.privacy.horizontal.clientapp import app

    if not any(a == "--port" or a.startswith("--port=") for a in args):
        args += ["--port", str(_free_port())]
    if not any(a == "--host" or a.startswith("--host=") for a in args):
        args += ["--host", "127.0.0.1"]
    prompt_object_pulls()
    wake = threading.Event()
    pace_supernode(loop, Pacer(), wake.set)
    serve_runtime_api_then_executor(cli, app, wake)
    sys.argv = ["flower-supernode", *args, "--isolation", "process"]
    cli.flower_supernode()


if __name__ == "__main__":
    main()
