"""Compose the platform: store, backend, scheduler, controllers and API in one process.

``modelplane up`` runs all of it; ``modelplane run-controller NAME`` runs one controller against
the same database, for production deployments on PostgreSQL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from modelplane.agent.redis_tier import PeerMemoryServer
from modelplane.api.auth import ensure_admin_token
from modelplane.backends.base import Backend, create_backend
from modelplane.control.base import Controller, ReconcileLoop
from modelplane.control.jobs import JobController
from modelplane.control.nodes import EmbeddedNodeAgent, NodeHealthController
from modelplane.control.scheduling import SchedulerController
from modelplane.core.cluster import parse_cluster
from modelplane.core.errors import ModelplaneError
from modelplane.data.lineage import open_platform_lineage, platform_lineage_url
from modelplane.scheduler.interface import Scheduler
from modelplane.settings import Settings
from modelplane.store import Store

CONTROLLERS = ("scheduler", "jobs", "node-health", "node-agent", "deployments")


def make_scheduler(name: str) -> Scheduler:
    from modelplane.scheduler.registry import create_scheduler

    return create_scheduler(name)


def import_cluster_file(store: Store, path: Path) -> tuple[int, int]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelplaneError(f"cannot read cluster file {path}: {exc}",
                              hint="check the path and the YAML syntax", field="cluster_file") from None
    cluster = parse_cluster(doc)
    for n in cluster.spec.nodes:
        store.upsert_node(n)
    for q in cluster.spec.queues:
        store.upsert_queue(q)
    return len(cluster.spec.nodes), len(cluster.spec.queues)


@dataclass
class Platform:
    settings: Settings
    store: Store
    backend: Backend
    loop: ReconcileLoop
    admin_token: str | None


def make_backend(settings: Settings) -> Backend:
    return create_backend(settings.backend, state_dir=settings.home / "backend" / settings.backend)


def _peer_memory_server(settings: Settings) -> PeerMemoryServer | None:
    """The local pool's peer-memory tier (one redis-server for this machine), when enabled."""
    if not settings.peer_memory or settings.peer_memory_urls:
        return None
    return PeerMemoryServer((settings.home / "peer-memory").resolve(), maxmemory=settings.peer_memory_maxmemory,
                            password=settings.peer_memory_password)


def make_controllers(names: tuple[str, ...], settings: Settings, store: Store, backend: Backend,
                     clock: Callable[[], float] = time.time) -> list[Controller]:
    out: list[Controller] = []
    for name in names:
        if name == "node-agent":
            # A backend that can tell which of its nodes are alive (Ray) speaks for them; under the
            # local backend this process hosts every node of the pool.
            alive = getattr(backend, "alive_node_names", None)
            hosts_pool = settings.backend == "local" and not callable(alive)
            out.append(EmbeddedNodeAgent(store, alive if callable(alive) else
                                         (lambda: [n.name for n in store.list_nodes()]),
                                         peer_memory=_peer_memory_server(settings) if hosts_pool else None))
        elif name == "scheduler":
            out.append(SchedulerController(store, make_scheduler(settings.scheduler), clock))
        elif name == "jobs":
            from modelplane.control.privacy import PrivacyBudgetController

            # Before the job controller in each round: a rank's last epsilon report is usually
            # recorded before its exit is seen (control/privacy.py).
            out.append(PrivacyBudgetController(store, settings.home / "runtime"))
            out.append(JobController(
                store, backend, clock, runtime_dir=settings.home / "runtime",
                checkpoint_root=settings.checkpoint_root or str((settings.home / "checkpoints").resolve()),
                heartbeat_timeout=settings.heartbeat_timeout, hang_timeout=settings.hang_timeout,
                restart_backoff=settings.restart_backoff, peer_memory_urls=settings.peer_memory_urls,
                peer_memory_password=settings.peer_memory_password,
                lineage_url=platform_lineage_url(settings)))
        elif name == "node-health":
            out.append(NodeHealthController(store, clock, settings.node_heartbeat_timeout))
        elif name == "deployments":
            from modelplane.control.deployments import DeploymentController

            out.append(DeploymentController(
                store, clock, cache_dir=(settings.home / "model-cache").resolve(),
                registry_url=settings.resolved_model_registry_url, autoscaler=settings.autoscaler,
                stable_s=settings.autoscale_stable_s, panic_s=settings.autoscale_panic_s,
                downscale_delay_s=settings.autoscale_downscale_delay_s,
                scale_to_zero_grace_s=settings.autoscale_scale_to_zero_grace_s, drain_delay_s=settings.drain_delay_s,
                lineage=open_platform_lineage(platform_lineage_url(settings))))
        else:
            raise ModelplaneError(f"unknown controller {name!r}", hint=f"use one of: {', '.join(CONTROLLERS)}")
    return out


def build_platform(settings: Settings, controllers: tuple[str, ...] = CONTROLLERS,
                   serves_api: bool = True) -> Platform:
    """Open the store (migrating it), create the first admin token if this process serves the API,
    import the cluster file, and assemble the backend and the controllers."""
    settings.home.mkdir(parents=True, exist_ok=True)
    store = Store(settings.resolved_database_url)
    # The first admin (service account 'admin', API key scoped role:admin) is created by the process
    # that serves the API, which also holds the signing keys under <home>/keys.
    token = ensure_admin_token(store, settings.home) if serves_api else None
    if token:
        creds = settings.home / "credentials"
        fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(yaml.safe_dump({"api_url": settings.resolved_api_url, "token": token}))
        os.chmod(creds, 0o600)
    if settings.cluster_file:
        import_cluster_file(store, settings.cluster_file)
    if serves_api and settings.backend == "local":
        from modelplane.backends.local_devices import detect, local_node

        found = detect()
        if found:  # real devices on this machine join the pool as a node of their own
            store.upsert_node(local_node(found))
    backend = make_backend(settings)
    importer = getattr(backend, "import_nodes", None)
    if serves_api and callable(importer):
        # A distributed engine (Ray, Kubernetes) knows its own nodes: they join the pool as they are.
        for item in importer():
            store.upsert_node(getattr(item, "spec", item))  # Kubernetes returns (spec, state) records
    loop = ReconcileLoop(make_controllers(controllers, settings, store, backend), settings.reconcile_interval)
    return Platform(settings, store, backend, loop, token)
