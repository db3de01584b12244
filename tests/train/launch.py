"""Start a multi-rank job as real processes, the way the local backend does: one process per rank
with RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    script: str,
    world: int,
    args: list[str],
    *,
    timeout: float = 120.0,
    extra_env: dict[str, str] | None = None,
) -> list[subprocess.CompletedProcess[str]]:
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ)
        env.update(
            RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            PYTHONPATH=f"{SRC}{os.pathsep}{env.get('PYTHONPATH', '')}",
            OMP_NUM_THREADS="1",
        )
        env.update(extra_env or {})
        procs.append(
            subprocess.Popen(
                [sys.executable, str(HERE / script), *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, r in enumerate(results):
        if r.returncode != 0:
            raise AssertionError(f"rank {rank} exited {r.returncode}:\n{r.stderr[-4000:]}")
    return results
