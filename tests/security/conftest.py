"""Fixtures: a real throwaway PostgreSQL server (as pytest-postgresql does) and SQLite engines.

Every SQL test runs on both backends through the parametrised ``engine`` fixture.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from modelplane.security.audit import make_sqlite_durable

_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found in /usr/local/bin or "
    "/usr/lib/postgresql/*/bin. Install them with `apt-get install postgresql` "
    "(or put them on PATH) to run the PostgreSQL half of the security tests."
)


def _find_bin_dir() -> Path:
    candidates = ["/usr/local/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    found = shutil.which("initdb")
    if found:
        candidates.insert(0, str(Path(found).parent))
    for cand in candidates:
        if (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    pytest.fail(_INSTALL_HINT, pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> list[str]:
    """initdb/postgres refuse to run as root: drop to the postgres user (or nobody)."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"]
    pytest.fail("running as root and neither a 'postgres' nor a 'nobody' user exists", pytrace=False)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Start a private PostgreSQL on a free port in a temporary directory; stop it afterwards."""
    bindir = _find_bin_dir()
    prefix = _run_as()
    workdir = Path(tempfile.mkdtemp(prefix="modelplane-pg-"))
    datadir = workdir / "data"
    if prefix:
        user = prefix[2]
        entry = pwd.getpwnam(user)
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    try:
        subprocess.run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=workdir,
        )
        subprocess.run(
            [
                *prefix,
                str(bindir / "pg_ctl"),
                "-D",
                str(datadir),
                "-w",
                "-t",
                "60",
                "-l",
                str(workdir / "log"),
                "-o",
                f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={workdir} -c fsync=on",
                "start",
            ],
            check=True,
            capture_output=True,
            env=env,
            cwd=workdir,
        )
    except subprocess.CalledProcessError as exc:
        log = (workdir / "log").read_text() if (workdir / "log").exists() else ""
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(
            f"could not start PostgreSQL: {exc.stderr.decode(errors='replace')}\n{log}", pytrace=False
        )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "stop"],
            capture_output=True,
            env=env,
            cwd=workdir,
        )
        shutil.rmtree(workdir, ignore_errors=True)


_db_counter = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        eng = make_sqlite_durable(create_engine(f"sqlite:///{tmp_path / 'security.db'}"))
        yield eng
        eng.dispose()
        return
    base = request.getfixturevalue("postgres_url")
    # A fresh schema per test is much cheaper than CREATE DATABASE and just as isolated.
    schema = f"t{os.getpid()}_{next(_db_counter)}"
    admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = create_engine(f"{base}/postgres", connect_args={"options": f"-c search_path={schema}"})
    yield eng
    eng.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()
