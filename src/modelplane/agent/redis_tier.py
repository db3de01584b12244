"""The node's share of the peer-memory checkpoint tier: one supervised, bounded redis-server.

Why these settings: the tier holds only the newest checkpoint copy of the ranks that mirror to
this node, so nothing is ever written to disk (no RDB, no AOF: the durable tier is the object
store); ``maxmemory`` bounds what training can take from the node's RAM; ``noeviction`` makes a
write that does not fit fail loudly (the checkpoint manager logs it and keeps the durable copy)
instead of silently evicting another rank's newest copy. It listens only on the node's address
and, when the cluster has a secret, requires it. The configuration (with the password) is a 0600
file, not command-line arguments that ``ps`` would show.

A restart after a crash reuses the same port, so the URL the node published stays valid; the
copies that were in memory are gone, and resume falls back to the durable tier.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from modelplane.agent.errors import AgentError

log = logging.getLogger("modelplane.agent.redis")

_PR_SET_PDEATHSIG = 1
INSTALL_HINT = "install Redis 7: apt-get install redis-server (Debian/Ubuntu), or put redis-server on PATH"


def find_redis_server() -> str:
    candidate = Path(sys.executable).parent / "redis-server"
    found = str(candidate) if candidate.exists() else shutil.which("redis-server")
    if not found:
        raise AgentError("the peer-memory tier needs the 'redis-server' binary, which is not on PATH",
                         hint=INSTALL_HINT + "; or run the agent with --no-peer-memory")
    return found


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """On Linux, the server gets SIGTERM if the agent dies (even by SIGKILL): no orphaned servers."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PeerMemoryServer:
    """Start, watch and stop one redis-server; ``url`` (no password) is what the node publishes."""

    def __init__(self, state_dir: Path, *, bind: str = "127.0.0.1", port: int = 0, maxmemory: str = "1gb",
                 password: str = "", start_timeout_s: float = 15.0) -> None:
        if port < 0 or port > 65535:
            raise AgentError(f"peer-memory port {port} is out of range", field="peer_memory_port",
                             hint="use 0 (any free port) or a port between 1 and 65535")
        self.state_dir = Path(state_dir)
        self.bind = bind
        self.port = port
        self.maxmemory = maxmemory
        self.password = password
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.starts = 0
        # The URL an earlier run of this state folder published: reused when its port is free, and
        # recognised as ours (stale, not another agent's) when it is still on a node.
        try:
            self.previous_url = (self.state_dir / "url").read_text().strip()
        except OSError:
            self.previous_url = ""
        atexit.register(self.stop)

    @property
    def url(self) -> str:
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"redis://{host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _write_config(self) -> Path:
        lines = [f"port {self.port}", f"bind {self.bind}", 'save ""', "appendonly no",
                 f"maxmemory {self.maxmemory}", "maxmemory-policy noeviction", f"dir {self.state_dir}",
                 "daemonize no", 'logfile ""']
        if self.password:
            lines.append(f'requirepass "{self.password}"')
        path = self.state_dir / "redis.conf"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start(self) -> None:
        """Start the server (on the same port as before, if it ran already) and wait for PING."""
        binary = find_redis_server()
        if any(c in self.password for c in '"\\\n\r'):
            raise AgentError("the peer-memory password may not contain quotes, backslashes or newlines",
                             field="peer_memory_password", hint="generate one with: openssl rand -hex 32")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = self._previous_port() or _free_port(self.bind)
        conf = self._write_config()
        if self._log is None:
            self._log = open(self.state_dir / "redis.log", "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen([binary, str(conf)], stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + self.start_timeout_s
        while not self.answers():
            if self._proc.poll() is not None:
                raise AgentError(f"redis-server exited with code {self._proc.returncode} while starting on "
                                 f"{self.bind}:{self.port}",
                                 hint=f"see {self.state_dir / 'redis.log'} (port taken? address not on this host?)")
            if time.monotonic() > deadline:
                self._kill()
                raise AgentError(f"redis-server did not answer PING on {self.bind}:{self.port} in "
                                 f"{self.start_timeout_s:g} s", hint=f"see {self.state_dir / 'redis.log'}")
            time.sleep(0.05)
        self.starts += 1
        (self.state_dir / "url").write_text(self.url + "\n")
        log.info("peer-memory redis-server %d listening at %s (maxmemory %s)", self._proc.pid, self.url,
                 self.maxmemory)

    def _previous_port(self) -> int:
        prefix = self.url.rsplit(":", 1)[0] + ":"  # same scheme and address
        if not self.previous_url.startswith(prefix):
            return 0
        try:
            port = int(self.previous_url[len(prefix):].split("/", 1)[0])
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((self.bind, port))
            return port
        except (ValueError, OSError):
            return 0

    def answers(self) -> bool:
        """PING (after AUTH when there is a password) answers PONG."""
        auth = f"AUTH {self.password}\r\n".encode() if self.password else b""
        try:
            with socket.create_connection((self.bind, self.port), timeout=1.0) as s:
                s.sendall(auth + b"PING\r\n")
                buf = b""
                while b"PONG" not in buf and b"-" not in buf[:1] and len(buf) < 256:
                    chunk = s.recv(64)
                    if not chunk:
                        break
                    buf += chunk
                return b"+PONG" in buf
        except OSError:
            return False

    def ensure_running(self) -> bool:
        """Start the server when it is not running or no longer answers; True if it (re)started."""
        if self._proc is not None and self._proc.poll() is None and self.answers():
            return False
        if self._proc is not None:
            log.warning("peer-memory redis-server at %s is %s; starting it again (its copies are lost, "
                        "jobs resume from the durable tier)", self.url,
                        "gone" if self._proc.poll() is not None else "not answering")
            self._kill()
        self.start()
        return True

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop(self) -> None:
        self._kill()
        if self._log is not None:
            self._log.close()
            self._log = None
