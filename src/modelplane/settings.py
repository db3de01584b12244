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
                                  "the newest checkpoint in memory (rank r mirrors to node (r+1) mod n)")
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
    def token_file(self) -> Path:
        return self.home / "admin-token"
