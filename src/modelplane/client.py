"""A small HTTP client for the API, used by the CLI and the SDK. Errors become ModelplaneError."""

from __future__ import annotations

from typing import Any

import httpx
import yaml

from modelplane.core.errors import ModelplaneError
from modelplane.settings import Settings


class ApiError(ModelplaneError):
    pass


def credentials(settings: Settings) -> tuple[str, str]:
    """(API URL, token) from settings, else from the credentials file ``modelplane up`` wrote."""
    url, token = settings.api_url, settings.token
    creds = settings.home / "credentials"
    if (not url or not token) and creds.is_file():
        data = yaml.safe_load(creds.read_text()) or {}
        url = url or data.get("api_url", "")
        token = token or data.get("token", "")
    return url or settings.resolved_api_url, token


class Client:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        return cls(*credentials(settings))

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
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
