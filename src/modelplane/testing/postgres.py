"""A throwaway PostgreSQL server on a free port, started with initdb/pg_ctl as pytest-postgresql does.

PostgreSQL refuses to run as root, so when we are root the server runs as the ``postgres`` user (or
``nobody``) in a temporary folder it owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them with "
    "'apt-get install -y postgresql' (Debian/Ubuntu) — 'make test' does this for you — "
    "or put their folder on PATH."
)


class PostgresMissing(RuntimeError):
    pass


def find_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for cand in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return cand
    raise PostgresMissing(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayPostgres:
    """Start with ``start()``; ``url`` is a SQLAlchemy URL; ``stop()`` removes everything."""

    def __init__(self) -> None:
        self.initdb = find_bin("initdb")
        self.pg_ctl = find_bin("pg_ctl")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="modelplane-pg-"))
        self.data = self.dir / "data"
        self.user: str | None = None
        if os.geteuid() == 0:
            for candidate in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(candidate)
                    self.user = candidate
                    break
                except KeyError:
                    continue
            if self.user is None:
                raise PostgresMissing("running as root and no 'postgres' or 'nobody' user exists to run PostgreSQL")
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o700)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=str(self.dir))

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> ThrowawayPostgres:
        r = self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--no-sync", "--locale=C")
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()}")
        opts = (f"-p {self.port} -h 127.0.0.1 -k {self.dir} -c fsync=off -c synchronous_commit=off "
                f"-c full_page_writes=off -c max_connections=200")
        r = self._run(self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w",
                      "-t", "60", "start")
        if r.returncode != 0:
            log = (self.dir / "log").read_text() if (self.dir / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()} {log[-2000:]}")
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not accept connections within 30 s")

    def stop(self) -> None:
        if self.data.exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
