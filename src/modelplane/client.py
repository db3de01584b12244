"""A small HTTP client for the API, used by the CLI and the SDK. Errors become ModelplaneError."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import yaml

from modelplane.core.errors import ModelplaneError
from modelplane.settings import Settings


class ApiError(ModelplaneError):
    pass


def read_credentials(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return data if isinstance(data, dict) else {}


def write_credentials(path: Path, data: dict[str, Any]) -> None:
    """The credentials file holds secrets: created 0600, rewritten in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(data))
    os.chmod(path, 0o600)


def credentials(settings: Settings) -> tuple[str, str]:
    """(API URL, token) from settings, else from the credentials file: a logged-in user's access
    token (``modelplane login``) before the admin API key ``modelplane up`` wrote."""
    url, token = settings.api_url, settings.token
    data = read_credentials(settings.home / "credentials")
    url = url or data.get("api_url", "")
    token = token or data.get("access_token", "") or data.get("token", "")
    return url or settings.resolved_api_url, token


class Client:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0,
                 credentials_file: Path | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials_file = credentials_file  # where a refreshed session is saved
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        url, token = credentials(settings)
        session = None if settings.token else settings.home / "credentials"
        return cls(url, token, credentials_file=session)

    def _refresh_session(self) -> bool:
        """After a 401: trade the saved refresh token for new tokens (once); False if there is none."""
        if self.credentials_file is None:
            return False
        data = read_credentials(self.credentials_file)
        refresh = data.get("refresh_token")
        if not refresh:
            return False
        r = self.http.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
        if r.status_code != 200:
            return False
        body = r.json()
        data.update(access_token=body["access_token"], refresh_token=body["refresh_token"])
        write_credentials(self.credentials_file, data)
        self.http.headers["Authorization"] = f"Bearer {body['access_token']}"
        return True

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, "/api/v1" + path, **kw)
            if r.status_code == 401 and not path.startswith("/auth/") and self._refresh_session():
                r = self.http.request(method, "/api/v1" + path, **kw)
        except httpx.ConnectError:
            raise ApiError(f"cannot reach the modelplane server at {self.base_url}",
                           hint="start it with 'make up' (or 'modelplane up'), or set MODELPLANE_API_URL") from None
        except httpx.HTTPError as exc:
            raise ApiError(f"request to {self.base_url} failed: {exc}", hint="check the server log") from None
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"message": r.text}
            err = ApiError(body.get("message", f"HTTP {r.status_code}"), hint=body.get("hint", ""),
                           field=body.get("field", ""))
            err.status_code = r.status_code
            raise err
        if r.status_code == 204:
            return None
        return r.json()

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def put(self, path: str, **kw: Any) -> Any:
        return self.request("PUT", path, **kw)
