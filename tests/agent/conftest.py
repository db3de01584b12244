"""A local instance-metadata server for the spot-notice tests.

The real AWS IMDS and GCP metadata server exist only inside those clouds (link-local
169.254.169.254 / metadata.google.internal). This server implements the endpoints the agent uses
exactly as AWS and GCP document them, including IMDSv2's session tokens, and lets a test
announce an interruption.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Metadata:
    """What the instance's metadata says; flip ``announce()`` to schedule an interruption."""

    def __init__(self) -> None:
        self.announced = False
        self.action = "terminate"
        self.time = "2026-11-26T12:02:00Z"
        self.tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.url = ""

    def announce(self, action: str = "terminate") -> None:
        self.action = action
        self.announced = True

    def revoke_tokens(self) -> None:
        self.tokens.clear()


def _handler(md: Metadata) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, code: int, body: str = "", headers: dict[str, str] | None = None) -> None:
            data = body.encode()
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            md.requests.append(("PUT", self.path))
            if self.path != "/latest/api/token":
                return self._send(404)
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return self._send(400)  # IMDSv2: the TTL header is required, 1 s to 6 h
            token = secrets.token_urlsafe(32)
            md.tokens.add(token)
            return self._send(200, token, {"X-aws-ec2-metadata-token-ttl-seconds": ttl, "Content-Type": "text/plain"})

        def do_GET(self) -> None:
            md.requests.append(("GET", self.path))
            if self.path.startswith("/latest/"):
                if self.headers.get("X-aws-ec2-metadata-token") not in md.tokens:
                    return self._send(401)  # IMDSv2 only: a missing or expired token is refused
                if self.path != "/latest/meta-data/spot/instance-action":
                    return self._send(404)
                if not md.announced:
                    return self._send(404)
                return self._send(200, json.dumps({"action": md.action, "time": md.time}),
                                  {"Content-Type": "text/plain"})
            if self.path.startswith("/computeMetadata/v1/"):
                if self.headers.get("Metadata-Flavor") != "Google" or "X-Forwarded-For" in self.headers:
                    return self._send(403, "Missing Metadata-Flavor:Google header.")
                if self.path != "/computeMetadata/v1/instance/preempted":
                    return self._send(404)
                return self._send(200, "TRUE" if md.announced else "FALSE",
                                  {"Metadata-Flavor": "Google", "Content-Type": "application/text"})
            return self._send(404)

    return Handler


def start_metadata() -> tuple[Metadata, ThreadingHTTPServer]:
    md = Metadata()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(md))
    md.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return md, server


@pytest.fixture
def metadata() -> Iterator[Metadata]:
    md, server = start_metadata()
    yield md
    server.shutdown()
    server.server_close()
