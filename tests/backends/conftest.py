"""Fixtures for the local backend tests: real processes under a temporary state directory."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from modelplane.backends.base import FINISHED_PHASES, TaskLaunch, TaskStatus
from modelplane.backends.local import LocalBackend, ProcessId

WAIT_SECONDS = 30.0  # generous: the machine is shared; no test asserts how long anything took


class Harness:
    """Launches tasks with sensible defaults and waits for them, on one state directory."""

    def __init__(self, state_dir: Path, work: Path) -> None:
        self.state_dir = state_dir
        self.work = work
        self.backend = LocalBackend(state_dir)
        self._started: list[tuple[LocalBackend, str]] = []

    @staticmethod
    def python_task(code: str) -> list[str]:
        return [sys.executable, "-c", code]

    @staticmethod
    def wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)

    @staticmethod
    def process_gone(pid: int) -> bool:
        """True once ``pid`` has exited (a zombie waiting for its parent counts as exited)."""
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state in ("Z", "X")

    @staticmethod
    def wrapper_pid(status: TaskStatus) -> int:
        ident = ProcessId.parse(status.handle)
        assert ident is not None, f"not a local handle: {status.handle!r}"
        return ident.pid

    @staticmethod
    def wait_until_file(path: Path) -> str:
        """Python source that blocks until ``path`` exists: lets a test decide when a task ends."""
        return f"import os, time\nwhile not os.path.exists({str(path)!r}): time.sleep(0.02)\n"

    def fresh_backend(self) -> LocalBackend:
        """A new instance on the same state directory, as after a control-plane restart."""
        return LocalBackend(self.state_dir)

    def task(self, job_id: str, command: list[str], rank: int = 0, world_size: int = 1,
             node: str = "node-0", **kwargs: object) -> TaskLaunch:
        return TaskLaunch(job_id=job_id, job_name=f"{job_id}-name", pod_set="main", index=rank, rank=rank,
                          world_size=world_size, node=node, command=command, **kwargs)  # type: ignore[arg-type]

    def launch(self, *tasks: TaskLaunch) -> list[TaskStatus]:
        statuses = self.backend.launch(list(tasks))
        self._started.extend((self.backend, t.job_id) for t in tasks)
        return statuses

    def wait_done(self, job_id: str, known: Sequence[TaskStatus],
                  backend: LocalBackend | None = None) -> list[TaskStatus]:
        backend = backend or self.backend
        box: list[list[TaskStatus]] = [list(known)]

        def done() -> bool:
            box[0] = backend.poll(job_id, box[0])
            return all(s.phase in FINISHED_PHASES for s in box[0])

        self.wait_for(done, f"job {job_id} to finish")
        return box[0]

    def log(self, job_id: str, rank: int = 0) -> str:
        text, _ = self.backend.read_logs(job_id, rank, 0)
        return text

    def go_file(self, name: str = "go") -> Path:
        return self.work / name

    def cleanup(self) -> None:
        for backend, job_id in self._started:
            backend.stop(job_id, grace_seconds=0)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Harness]:
    work = tmp_path / "work"
    work.mkdir()
    harness = Harness(tmp_path / "state", work)
    try:
        yield harness
    finally:
        harness.cleanup()
