"""All settings in one typed tree, read from ``MODELPLANE_*`` variables and an optional YAML file.

Precedence: explicit arguments > environment > config file (``MODELPLANE_CONFIG`` or
``~/.config/modelplane/config.yaml``) > defaults. The defaults run everything embedded: SQLite in
``./.modelplane``, the local backend, the demo pool.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


def _config_file() -> Path:
    env = os.environ.get("MODELPLANE_CONFIG")
    return Path(env) if env else Path.home() / ".config" / "modelplane" / "config.yaml"


class _YamlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _config_file()
        if not path.is_file():
            return {}
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the config file must be a mapping of setting names to values")
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELPLANE_", extra="ignore")

    home: Path = Field(default=Path(".modelplane"), description="state folder: database, logs, token")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty = SQLite in <home>/modelplane.db")
    lineage_url: str = Field(default="", description="SQLAlchemy URL of the lineage graph; empty = the platform's "
                             "own database (its lineage_* tables). Jobs get it as MODELPLANE_LINEAGE_URL")
    host: str = "127.0.0.1"
    port: int = 8470
    backend: str = "local"
    scheduler: str = "default"
    cluster_file: Path | None = Field(default=None, description="nodes and queues imported at start")
    reconcile_interval: float = Field(default=0.5, gt=0, description="seconds between controller rounds")
    node_heartbeat_timeout: float = Field(default=60.0, gt=0, description="seconds before a silent node is NotReady")
    checkpoint_root: str = Field(default="", description="where jobs checkpoint (path or fsspec URL); "
                                 "empty = <home>/checkpoints")
    heartbeat_timeout: float = Field(default=120.0, gt=0, description="seconds of silence from a training "
                                     "rank's heartbeat before its job is recovered")
    hang_timeout: float = Field(default=1800.0, gt=0, description="seconds without training progress "
                                "(heartbeats arriving, step not advancing) before a job is recovered")
    restart_backoff: float = Field(default=1.0, ge=0, description="seconds before the first restart of a "
                                   "failed job; doubles with each restart, capped at 5 minutes")
    peer_memory_urls: str = Field(default="", description="comma-separated Redis URLs, one per node, that hold "
                                  "the newest checkpoint in memory (rank r mirrors to node (r+1) mod n); "
                                  "overrides the URLs the node agents publish")
    peer_memory: bool = Field(default=True, description="under the local backend, the embedded node agent "
                              "runs one redis-server as the pool's peer-memory checkpoint tier")
    peer_memory_maxmemory: str = Field(default="1gb", pattern=r"^[0-9]+(b|kb|mb|gb)?$",
                                       description="memory bound of each node's peer-memory redis-server "
                                       "(Redis units, e.g. 512mb, 8gb); at least twice a node's checkpoint share")
    peer_memory_password: str = Field(default="", description="per-cluster secret the peer-memory Redis "
                                      "servers require; jobs get it inside their URLs, nodes never publish it")
    model_registry_url: str = Field(default="", description="model registry root (path or fsspec URL) that "
                                    "registry:// references resolve in; empty = <home>/models")
    autoscaler: str = Field(default="ours", description="replica autoscaling policy: ours, kpa or hpa")
    autoscale_stable_s: float = Field(default=30.0, gt=0, description="stable window of the replica autoscaler")
    autoscale_panic_s: float = Field(default=6.0, gt=0, description="panic window of the replica autoscaler")
    autoscale_downscale_delay_s: float = Field(default=300.0, ge=0, description="seconds of low demand before "
                                               "a deployment gives a replica back (ours)")
    autoscale_scale_to_zero_grace_s: float = Field(default=30.0, ge=0, description="seconds at zero demand "
                                                   "before the last replica goes (minReplicas: 0)")
    drain_delay_s: float = Field(default=2.0, ge=0, description="seconds between taking a replica out of the "
                                 "gateway and stopping it (the gateway refreshes its replica list every second)")
    gateway_max_in_flight: int = Field(default=64, ge=1, description="requests per deployment sent to replicas "
                                       "at once; more wait")
    gateway_max_waiting: int = Field(default=256, ge=0, description="requests per deployment that may wait; "
                                     "more get 429 with Retry-After")
    storage_sources: list[str] = Field(default_factory=list, description="what the cost report measures for "
                                       "storage: KIND=URL entries, KIND one of hot (datasets on SSD), cache (a hot-"
                                       "cache directory), ec (an erasure-coded store root), s3 (a bucket URL)")
    storage_prices: dict[str, float] = Field(default_factory=dict, description="USD per GB-month per storage "
                                             "tier (hot, ec, s3-standard, s3-ia); unset tiers use the AWS list "
                                             "prices in core/storage_cost.py")
    api_url: str = Field(default="", description="for the CLI: the server to talk to")
    token: str = Field(default="", description="for the CLI: bearer token")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'modelplane.db').resolve()}"

    @property
    def resolved_api_url(self) -> str:
        return self.api_url or f"http://{self.host}:{self.port}"

    @property
    def resolved_model_registry_url(self) -> str:
        return self.model_registry_url or str((self.home / "models").resolve())

    @property
    def token_file(self) -> Path:
        return self.home / "admin-token"
