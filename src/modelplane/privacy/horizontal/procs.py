"""Stopping the Flower processes a task started (SuperLink, SuperNode)."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; the SuperExec and apps Flower started follow it
    (they watch their parent's pid)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
