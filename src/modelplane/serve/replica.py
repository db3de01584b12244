"""A replica: one ONNX model behind HTTP, with dynamic batching, health, readiness and graceful drain.

Endpoints (KServe v2 paths, JSON body simplified to rows):
  GET  /v2/health/live            200 while the process runs
  GET  /v2/health/ready           200 when the model is loaded and the replica is not draining, else 503
  GET  /v2/models/{name}          input name, per-row shape and dtype
  POST /v2/models/{name}/infer    {"inputs": [[...], ...]} -> {"outputs": [[...], ...]}
  GET  /metrics                   Prometheus text (nv_inference_* names)

On SIGTERM the replica turns unready, stops accepting connections, finishes every request already
received (uvicorn waits for open connections; the batcher runs what is queued), then exits.

Port 0 asks the kernel for a free port on the replica's own machine (a port the control plane
found free on its host says nothing about a Ray node's). Once it listens -- the model loaded --
the replica writes ``{"host": ..., "port": ...}`` to ``--address-file`` (default
``$MODELPLANE_ADDRESS_FILE``, set by the backends that read it back), which is how the job
controller learns the endpoint the gateway routes to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import FrameType

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelplane.backends.base import ADDRESS_FILE_ENV
from modelplane.core.errors import ModelplaneError
from modelplane.serve.batching import BatchingConfig, DynamicBatcher
from modelplane.serve.errors import BadInput, ModelNotFound, Overloaded
from modelplane.serve.metrics import ReplicaMetrics
from modelplane.serve.runtime import OnnxModel


@dataclass
class ReplicaConfig:
    """What a replica serves and how it batches."""

    model_name: str
    model_path: str
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    intra_op_threads: int = 1


def error_response(exc: ModelplaneError) -> JSONResponse:
    """The JSON body every serving error uses; 429 carries Retry-After in whole seconds."""
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(max(1, int(np.ceil(exc.retry_after_s))))
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)


class ReplicaState:
    """Mutable state shared by the handlers of one replica."""

    def __init__(self, config: ReplicaConfig) -> None:
        self.config = config
        self.metrics = ReplicaMetrics(config.model_name)
        self.model: OnnxModel | None = None
        self.batcher: DynamicBatcher | None = None
        self.draining = False

    @property
    def ready(self) -> bool:
        return self.model is not None and not self.draining


def create_replica_app(config: ReplicaConfig) -> Starlette:
    """The ASGI app of one replica; the model loads in the lifespan startup."""
    state = ReplicaState(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        model = await asyncio.to_thread(
            OnnxModel, config.model_path, intra_op_threads=config.intra_op_threads
        )
        state.batcher = DynamicBatcher(model.run, config.batching, on_batch=state.metrics.on_batch)
        state.batcher.start()
        state.model = model
        yield
        state.draining = True
        await state.batcher.drain()

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse(
            {"ready": state.ready, "draining": state.draining}, status_code=200 if state.ready else 503
        )

    def _check_name(request: Request) -> OnnxModel:
        name = request.path_params["name"]
        if name != config.model_name:
            raise ModelNotFound(
                f"model {name!r} is not served here", hint=f"this replica serves {config.model_name!r}"
            )
        if state.model is None:
            raise ModelNotFound("the model is still loading", hint="wait for /v2/health/ready")
        return state.model

    async def metadata(request: Request) -> Response:
        try:
            model = _check_name(request)
        except ModelplaneError as exc:
            return error_response(exc)
        spec = model.input
        return JSONResponse(
            {
                "name": config.model_name,
                "input": {"name": spec.name, "row_shape": list(spec.row_shape), "dtype": spec.dtype},
            }
        )

    async def infer(request: Request) -> Response:
        started = time.perf_counter()
        labels = state.metrics.request_success.labels(config.model_name)
        try:
            model = _check_name(request)
            try:
                body = json.loads(await request.body())
            except json.JSONDecodeError as exc:
                raise BadInput(
                    f"request body is not JSON: {exc}", hint='send {"inputs": [[...], ...]}'
                ) from exc
            if not isinstance(body, dict) or "inputs" not in body:
                raise BadInput(
                    "request body has no 'inputs'",
                    hint=f'send {{"inputs": rows}} shaped {model.input.describe()}',
                    field="inputs",
                )
            rows = model.coerce(body["inputs"])
            assert state.batcher is not None
            state.metrics.pending.labels(config.model_name).inc()
            try:
                out = await state.batcher.infer(rows)
            finally:
                state.metrics.pending.labels(config.model_name).dec()
        except ModelplaneError as exc:
            state.metrics.request_failure.labels(config.model_name).inc()
            return error_response(exc)
        labels.inc()
        state.metrics.request_duration_us.labels(config.model_name).observe(
            (time.perf_counter() - started) * 1e6
        )
        return JSONResponse({"model": config.model_name, "outputs": out.tolist()})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/v2/health/live", live),
            Route("/v2/health/ready", ready),
            Route("/v2/models/{name}", metadata),
            Route("/v2/models/{name}/infer", infer, methods=["POST"]),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )
    app.state.replica = state
    return app


def write_address(path: str, host: str, port: int) -> None:
    """Report where the replica listens: written whole (rename) so a reader never sees half of it."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"host": host, "port": port}, fh)
    os.replace(tmp, path)


def serve_replica(
    config: ReplicaConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    drain_timeout_s: float = 30.0,
    address_file: str | None = None,
) -> None:
    """Run a replica until SIGTERM/SIGINT, then drain: unready at once, finish in-flight requests, exit.

    ``port`` 0: the kernel picks one; ``address_file`` receives the address bound once the model is
    loaded and the socket listens (see the module docstring)."""
    import uvicorn

    app = create_replica_app(config)

    class _DrainingServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and address_file:
                bound = self.servers[0].sockets[0].getsockname()
                write_address(address_file, str(bound[0]), int(bound[1]))

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.replica.draining = True
            super().handle_exit(sig, frame)

    server = _DrainingServer(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=int(drain_timeout_s),
            access_log=False,
        )
    )
    server.run()
    if not server.started:  # the model did not load (or the port was taken): a failure, as uvicorn.run says
        raise SystemExit(3)


def main(argv: list[str] | None = None) -> None:
    """``python -m modelplane.serve.replica --model-name m --model-path m.onnx --port 8000``."""
    import argparse

    p = argparse.ArgumentParser(description="Serve one ONNX model with dynamic batching")
    p.add_argument("--model-name", required=True)
    p.add_argument("--model-path", required=True)
    p.add_argument(
        "--host",
        default=None,
        help="default: $MODELPLANE_HOST (a remote backend sets its node's address), else 127.0.0.1",
    )
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="0: any free port; default: $MODELPLANE_PORT (the control plane's pick, or 0), else 8000",
    )
    p.add_argument(
        "--address-file",
        default=None,
        help=f"where to write the address bound, once ready (default: ${ADDRESS_FILE_ENV})",
    )
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    p.add_argument("--max-queue-rows", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    cfg = ReplicaConfig(
        a.model_name,
        a.model_path,
        BatchingConfig(
            a.max_batch_size, a.max_queue_delay_ms / 1000.0, max(a.max_queue_rows, a.max_batch_size)
        ),
        a.threads,
    )
    port = a.port if a.port is not None else _env_port()
    if not 0 <= port < 65536:
        p.error(f"port {port} is out of range (0-65535; 0 picks a free one)")
    serve_replica(
        cfg,
        host=a.host or os.environ.get("MODELPLANE_HOST") or "127.0.0.1",
        port=port,
        address_file=a.address_file or os.environ.get(ADDRESS_FILE_ENV) or None,
    )


def _env_port() -> int:
    """The port the job controller chose for this task (0: the replica picks and reports it)."""
    import sys

    text = os.environ.get("MODELPLANE_PORT", "8000")
    try:
        return int(text)
    except ValueError:
        sys.exit(f"error: MODELPLANE_PORT={text!r} is not a port number (pass --port or unset it)")


if __name__ == "__main__":
    main()

__all__ = ["ReplicaConfig", "create_replica_app", "error_response", "main", "serve_replica", "write_address"]
