"""Gateway: one endpoint per deployment, least-outstanding routing, admission control, retries, guards.

Request path for ``POST /v1/deployments/{name}/infer``:
  admission  -> at most ``max_in_flight`` requests go to replicas; up to ``max_waiting`` wait for a
                slot; beyond that the answer is 429 with Retry-After (memory stays bounded)
  input guards (on every string in the JSON body) -> 403 when one blocks
  route      -> the ready replica with the fewest outstanding requests (ties: round robin)
  retry      -> on a connection error, a 5xx or a replica's 429, the replica is ejected for
                ``eject_s`` and the request goes to another one, up to ``max_attempts`` in all
  output guards (on every string in the replica's JSON answer) -> redacted or 403
The replica list is set from outside (``set_replicas``) by the controller that scales the deployment.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelplane.core.errors import ModelplaneError
from modelplane.serve.errors import BadInput, Blocked, ModelNotFound, NoReplicaAvailable, Overloaded
from modelplane.serve.guards.base import GuardDecision, GuardPipeline
from modelplane.serve.metrics import GatewayMetrics
from modelplane.serve.replica import error_response

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass
class DeploymentConfig:
    """How the gateway fronts one deployment."""

    name: str
    model_name: str
    max_in_flight: int = 64
    max_waiting: int = 256
    max_attempts: int = 3
    eject_s: float = 5.0
    timeout_s: float = 30.0
    guards: GuardPipeline | None = None


@dataclass
class _Replica:
    url: str
    outstanding: int = 0
    ejected_until: float = 0.0


@dataclass
class _Deployment:
    config: DeploymentConfig
    replicas: dict[str, _Replica] = field(default_factory=dict)
    slots: asyncio.Semaphore | None = None
    waiting: int = 0
    latency_ewma_s: float = 0.05
    rr: itertools.count[int] = field(default_factory=itertools.count)


class Gateway:
    """Routing and admission state for every deployment; ``create_gateway_app`` puts HTTP in front."""

    def __init__(self, *, metrics: GatewayMetrics | None = None) -> None:
        self.metrics = metrics or GatewayMetrics()
        self._session: aiohttp.ClientSession | None = None
        self._deployments: dict[str, _Deployment] = {}

    # --- control surface (called by the deployment controller) ---
    def add_deployment(self, config: DeploymentConfig, replicas: list[str] | None = None) -> None:
        if config.max_in_flight < 1 or config.max_waiting < 0 or config.max_attempts < 1:
            raise ValueError("max_in_flight and max_attempts must be >= 1, max_waiting >= 0")
        if config.guards is not None:
            config.guards.callbacks.append(self._count_decision(config.name))
        self._deployments[config.name] = _Deployment(config)
        self.set_replicas(config.name, replicas or [])

    def update_config(self, config: DeploymentConfig) -> None:
        """Swap a deployment's settings and guards in place (an apply that changed them): its
        replicas, their outstanding counts and the requests in flight carry on."""
        dep = self._get(config.name)
        if config.guards is not None:
            config.guards.callbacks.append(self._count_decision(config.name))
        dep.config = config

    def remove_deployment(self, name: str) -> None:
        self._deployments.pop(name, None)

    def set_replicas(self, name: str, urls: list[str]) -> None:
        """Replace the replica set (keeps counters of replicas that stay)."""
        dep = self._get(name)
        dep.replicas = {u: dep.replicas.get(u, _Replica(u)) for u in urls}

    def outstanding(self, name: str) -> dict[str, int]:
        return {u: r.outstanding for u, r in self._get(name).replicas.items()}

    def load(self, name: str) -> tuple[int, int]:
        """(requests in flight to replicas, requests waiting for admission): the autoscaler's inputs."""
        dep = self._get(name)
        return sum(r.outstanding for r in dep.replicas.values()), dep.waiting

    def deployments(self) -> list[str]:
        return sorted(self._deployments)

    def latency_s(self, name: str) -> float:
        """The moving average of replica answer times (what Retry-After is computed from)."""
        return self._get(name).latency_ewma_s

    def _get(self, name: str) -> _Deployment:
        dep = self._deployments.get(name)
        if dep is None:
            raise ModelNotFound(f"no deployment named {name!r}", hint=f"known deployments: {sorted(self._deployments)}")
        return dep

    def _count_decision(self, deployment: str):  # type: ignore[no-untyped-def]
        def cb(d: GuardDecision, ctx: dict[str, str]) -> None:
            self.metrics.guard_decisions.labels(deployment, d.guard, d.stage, d.action.value).inc()
        return cb

    # --- request path ---
    def _session_for(self) -> aiohttp.ClientSession:
        """One pooled upstream session per event loop (aiohttp: lower per-request cost than httpx)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def infer(self, name: str, body: Any, *, request_id: str = "") -> Any:
        """Python callers: JSON in, JSON out (see ``infer_bytes``)."""
        return json.loads(await self.infer_bytes(name, json.dumps(body).encode(), request_id=request_id))

    async def infer_bytes(self, name: str, raw: bytes, *, request_id: str = "") -> bytes:
        """Admit, guard, route with retries, guard the answer; returns the JSON bytes to send or raises.

        Without guards the body is forwarded as received and the answer returned as sent: the
        gateway never parses JSON it does not need to read.
        """
        dep = self._get(name)
        cfg = dep.config
        if dep.slots is None:
            dep.slots = asyncio.Semaphore(cfg.max_in_flight)
        ctx = {"deployment": name, "request_id": request_id or uuid.uuid4().hex}
        if dep.slots.locked() and dep.waiting >= cfg.max_waiting:
            self.metrics.rejected.labels(name).inc()
            retry = dep.latency_ewma_s * (dep.waiting + 1) / cfg.max_in_flight
            raise Overloaded(
                f"deployment {name!r} is at capacity ({cfg.max_in_flight} in flight, {dep.waiting} waiting)",
                retry_after_s=max(1.0, math.ceil(retry)), hint="retry after the delay; the autoscaler adds replicas",
            )
        if cfg.guards is not None and cfg.guards.input_guards:
            texts = _strings(_parse(raw))
            if texts:
                verdict = cfg.guards.check_input("\n".join(texts), ctx)
                if not verdict.allowed:
                    d = verdict.blocked_by
                    raise Blocked(f"input refused by guard {d.guard if d else '?'}", hint="rephrase the request",
                                  field=",".join(d.reasons) if d else "")
        t_wait = time.perf_counter()
        dep.waiting += 1
        self.metrics.waiting.labels(name).inc()
        try:
            await dep.slots.acquire()
        finally:
            dep.waiting -= 1
            self.metrics.waiting.labels(name).dec()
        self.metrics.queue_time.labels(name).observe(time.perf_counter() - t_wait)
        try:
            answer = await self._send_with_retries(dep, raw)
        finally:
            dep.slots.release()
        if cfg.guards is not None and cfg.guards.output_guards:
            answer = json.dumps(_guard_output(cfg.guards, json.loads(answer), ctx)).encode()
        return answer

    async def _send_with_retries(self, dep: _Deployment, raw: bytes) -> bytes:
        cfg = dep.config
        tried: set[str] = set()
        last_error = "no ready replica"
        timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        for attempt in range(cfg.max_attempts):
            replica = self._pick(dep, tried)
            if replica is None:
                break
            tried.add(replica.url)
            if attempt:
                self.metrics.retries.labels(cfg.name).inc()
            replica.outstanding += 1
            self.metrics.running.labels(cfg.name).inc()
            t0 = time.perf_counter()
            try:
                async with self._session_for().post(
                    f"{replica.url}/v2/models/{cfg.model_name}/infer", data=raw,
                    headers={"content-type": "application/json"}, timeout=timeout,
                ) as resp:
                    status, payload = resp.status, await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                replica.ejected_until = time.monotonic() + cfg.eject_s
                last_error = f"{replica.url}: {type(exc).__name__}"
                continue
            finally:
                replica.outstanding -= 1
                self.metrics.running.labels(cfg.name).dec()
            if status in RETRYABLE_STATUS:
                if status != 429:
                    replica.ejected_until = time.monotonic() + cfg.eject_s
                last_error = f"{replica.url}: HTTP {status}"
                continue
            dep.latency_ewma_s = 0.9 * dep.latency_ewma_s + 0.1 * (time.perf_counter() - t0)
            if status >= 400:
                raise _upstream_error(status, payload)
            return payload
        raise NoReplicaAvailable(
            f"deployment {cfg.name!r}: no replica answered ({last_error})",
            hint="check replica health; the request was not executed successfully on any replica",
        )

    def _pick(self, dep: _Deployment, tried: set[str]) -> _Replica | None:
        now = time.monotonic()
        candidates = [r for r in dep.replicas.values() if r.url not in tried and r.ejected_until <= now]
        if not candidates:  # every replica ejected: try an ejected one rather than fail outright
            candidates = [r for r in dep.replicas.values() if r.url not in tried]
        if not candidates:
            return None
        low = min(r.outstanding for r in candidates)
        best = [r for r in candidates if r.outstanding == low]
        return best[next(dep.rr) % len(best)]


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInput(f"request body is not JSON: {exc}", hint='send {"inputs": ...}') from exc


def _upstream_error(status: int, payload: bytes) -> ModelplaneError:
    try:
        d = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        d = {"message": payload[:200].decode(errors="replace")}
    err = BadInput(d.get("message", "replica refused the request"), hint=d.get("hint", ""), field=d.get("field", ""))
    err.status_code = status
    return err


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def _guard_output(guards: GuardPipeline, obj: Any, ctx: dict[str, str]) -> Any:
    """Run output guards on every string leaf; redactions replace the leaf, a block raises."""
    if isinstance(obj, str):
        verdict = guards.check_output(obj, ctx)
        if not verdict.allowed:
            d = verdict.blocked_by
            raise Blocked(f"output withheld by guard {d.guard if d else '?'}", hint="the answer contained restricted content",
                          field=",".join(d.reasons) if d else "")
        return verdict.text
    if isinstance(obj, dict):
        return {k: _guard_output(guards, v, ctx) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_guard_output(guards, v, ctx) for v in obj]
    return obj


def create_gateway_app(gateway: Gateway) -> Starlette:
    """HTTP front: ``POST /v1/deployments/{name}/infer``, ``GET /v1/deployments``, ``/healthz``, ``/metrics``."""

    async def infer(request: Request) -> Response:
        name = request.path_params["name"]
        t0 = time.perf_counter()
        try:
            answer = await gateway.infer_bytes(name, await request.body(), request_id=request.headers.get("x-request-id", ""))
        except ModelplaneError as exc:
            if name in gateway.deployments():
                gateway.metrics.responses.labels(name, str(exc.status_code)).inc()
            return error_response(exc)
        gateway.metrics.responses.labels(name, "200").inc()
        gateway.metrics.e2e_latency.labels(name).observe(time.perf_counter() - t0)
        return Response(answer, media_type="application/json")

    async def listing(request: Request) -> Response:
        out = []
        for n in gateway.deployments():
            running, waiting = gateway.load(n)
            out.append({"name": n, "replicas": gateway.outstanding(n), "running": running, "waiting": waiting})
        return JSONResponse(out)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[
        Route("/v1/deployments/{name}/infer", infer, methods=["POST"]),
        Route("/v1/deployments", listing),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
    ])


def main(argv: list[str] | None = None) -> None:
    """``python -m modelplane.serve.gateway --deployment d --model m --replica URL [--replica URL] [--guards]``."""
    import argparse

    import uvicorn

    p = argparse.ArgumentParser(description="Run the gateway in front of one deployment's replicas")
    p.add_argument("--deployment", required=True)
    p.add_argument("--model", required=True, help="model name the replicas serve")
    p.add_argument("--replica", action="append", default=[], help="replica base URL (repeat)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--max-in-flight", type=int, default=64)
    p.add_argument("--max-waiting", type=int, default=256)
    p.add_argument("--guards", action="store_true", help="injection filter on input, PII monitor on output")
    p.add_argument("--pii-engine", default="presidio", choices=["presidio", "regex"])
    a = p.parse_args(argv)
    guards = None
    if a.guards:
        from modelplane.serve.guards.injection import InjectionFilter
        from modelplane.serve.guards.pii import PiiMonitor

        guards = GuardPipeline(input_guards=[InjectionFilter()], output_guards=[PiiMonitor(engine=a.pii_engine)])
    gw = Gateway()
    gw.add_deployment(DeploymentConfig(a.deployment, a.model, a.max_in_flight, a.max_waiting, guards=guards), a.replica)
    uvicorn.run(create_gateway_app(gw), host=a.host, port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
