"""Spot interruption notices, read from the cloud's instance metadata service.

AWS (IMDSv2): ``PUT /latest/api/token`` (header ``X-aws-ec2-metadata-token-ttl-seconds``) returns a
session token; ``GET /latest/meta-data/spot/instance-action`` with ``X-aws-ec2-metadata-token``
answers 404 until an interruption is scheduled, then 200 with ``{"action": "terminate" | "stop" |
"hibernate", "time": "<UTC ISO 8601>"}`` about two minutes ahead. A 401 means the token expired.

GCP: ``GET /computeMetadata/v1/instance/preempted`` with ``Metadata-Flavor: Google`` answers
``FALSE``, then ``TRUE`` once the VM is being preempted (about 30 s ahead); the server echoes the
``Metadata-Flavor: Google`` header, which tells it apart from anything else on that address.

The real metadata services exist only inside those clouds: the tests run a local HTTP server that
implements these endpoints as AWS and GCP document them, and point ``base_url`` at it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Protocol

import httpx

from modelplane.agent.errors import AgentError

AWS_METADATA_URL = "http://169.254.169.254"
GCP_METADATA_URL = "http://metadata.google.internal"
PROVIDERS = ("aws", "gcp", "none")


@dataclass(frozen=True)
class InterruptionNotice:
    provider: str
    action: str  # terminate, stop, hibernate (AWS); preempt (GCP)
    time: str  # when the instance goes away, as the cloud wrote it ("" when it does not say)

    def describe(self) -> str:
        when = f" at {self.time}" if self.time else ""
        return f"{self.provider} spot interruption notice: {self.action}{when}"


class NoticeSource(Protocol):
    provider: str

    def poll(self) -> InterruptionNotice | None:
        """The notice when one is announced, else None; raises AgentError when the service fails."""
        ...


class AwsSpotNotice:
    provider = "aws"
    TOKEN_TTL_S = 21600

    def __init__(self, base_url: str = AWS_METADATA_URL, timeout_s: float = 2.0) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self._token = ""
        self._token_expires = 0.0

    def _session_token(self) -> str:
        if not self._token or time.monotonic() > self._token_expires:
            r = self.http.put("/latest/api/token",
                              headers={"X-aws-ec2-metadata-token-ttl-seconds": str(self.TOKEN_TTL_S)})
            if r.status_code != 200:
                raise AgentError(f"the AWS metadata service refused a session token (HTTP {r.status_code})",
                                 hint="IMDSv2 must be enabled and its hop limit must reach the agent")
            self._token = r.text.strip()
            self._token_expires = time.monotonic() + self.TOKEN_TTL_S - 60
        return self._token

    def poll(self) -> InterruptionNotice | None:
        try:
            for _ in range(2):
                r = self.http.get("/latest/meta-data/spot/instance-action",
                                  headers={"X-aws-ec2-metadata-token": self._session_token()})
                if r.status_code != 401:
                    break
                self._token = ""  # expired or revoked: take a new one, once
        except httpx.HTTPError as exc:
            raise AgentError(f"the AWS metadata service at {self.http.base_url} did not answer: {exc}",
                             hint="run the agent on the EC2 instance, or pass --metadata-url") from None
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise AgentError(f"the AWS metadata service answered HTTP {r.status_code} for spot/instance-action",
                             hint="check the instance's metadata options")
        try:
            doc = json.loads(r.text)
            return InterruptionNotice("aws", str(doc["action"]), str(doc.get("time", "")))
        except (ValueError, KeyError, TypeError):
            raise AgentError(f"spot/instance-action is not the documented JSON: {r.text[:200]!r}",
                             hint='expected {"action": "terminate", "time": "..."}') from None


class GcpPreemptedNotice:
    provider = "gcp"

    def __init__(self, base_url: str = GCP_METADATA_URL, timeout_s: float = 2.0) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s,
                                 headers={"Metadata-Flavor": "Google"})

    def poll(self) -> InterruptionNotice | None:
        try:
            r = self.http.get("/computeMetadata/v1/instance/preempted")
        except httpx.HTTPError as exc:
            raise AgentError(f"the GCP metadata server at {self.http.base_url} did not answer: {exc}",
                             hint="run the agent on the GCE VM, or pass --metadata-url") from None
        if r.status_code != 200 or r.headers.get("Metadata-Flavor") != "Google":
            raise AgentError(f"{self.http.base_url} is not a GCP metadata server (HTTP {r.status_code}, "
                             f"Metadata-Flavor {r.headers.get('Metadata-Flavor')!r})",
                             hint="pass --metadata-url pointing at the metadata server, or --spot-notice none")
        value = r.text.strip().upper()
        if value == "TRUE":
            return InterruptionNotice("gcp", "preempt", "")
        if value == "FALSE":
            return None
        raise AgentError(f"instance/preempted answered {r.text[:50]!r}, not TRUE or FALSE",
                         hint="check the metadata server")


def notice_source(provider: str, base_url: str = "", timeout_s: float = 2.0) -> NoticeSource | None:
    """The poller for ``provider`` (aws, gcp), or None for ``none``."""
    if provider == "aws":
        return AwsSpotNotice(base_url or AWS_METADATA_URL, timeout_s)
    if provider == "gcp":
        return GcpPreemptedNotice(base_url or GCP_METADATA_URL, timeout_s)
    if provider == "none":
        return None
    raise AgentError(f"unknown spot notice provider {provider!r}", field="spot_notice",
                     hint=f"use one of: {', '.join(PROVIDERS)}")
