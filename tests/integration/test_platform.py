"""The platform as a user meets it: `modelplane up`, then the CLI, over real HTTP."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import REPO, Server

pytestmark = pytest.mark.integration


def wait_state(server: Server, name: str, states: set[str], timeout: float = 120) -> dict:
    with server.client() as c:
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = c.get(f"/jobs/{name}").json()
            if job["state"] in states:
                return job
            time.sleep(0.3)
    raise AssertionError(f"{name} still {job['state']}: {job}")


def test_example_training_job_runs_to_success_through_the_cli(server: Server):
    r = server.cli("apply", "-f", str(REPO / "examples" / "training-job.yaml"))
    assert r.returncode == 0, r.stderr
    assert "trainingjob/ddp-demo created" in r.stdout
    job = wait_state(server, "ddp-demo", {"Succeeded", "Failed"}, timeout=180)
    assert job["state"] == "Succeeded", job
    r = server.cli("logs", "ddp-demo")
    assert r.returncode == 0, r.stderr
    assert "[rank 0]" in r.stdout and "[rank 1]" in r.stdout
    assert "weights identical across 2 ranks" in r.stdout
    r = server.cli("describe", "job", "ddp-demo")
    assert "Succeeded" in r.stdout and "placement:" in r.stdout and "a100-0" in r.stdout  # preferred non-spot
    r = server.cli("get", "jobs")
    assert "ddp-demo" in r.stdout and "Succeeded" in r.stdout
    r = server.cli("cost", "report", "--since", "1d")
    assert r.returncode == 0, r.stderr
    assert "ddp-demo" in r.stdout and "research" in r.stdout and "idle" in r.stdout
    r = server.cli("cost", "report", "--since", "soon")
    assert r.returncode == 2 and "duration" in r.stderr


def test_cli_lists_the_demo_pool_and_queues(server: Server):
    r = server.cli("get", "nodes")
    assert r.returncode == 0 and all(n in r.stdout for n in ("a100-0", "mi250-0", "ascend-0", "cpu-0"))
    r = server.cli("get", "queues")
    assert r.returncode == 0 and "training" in r.stdout and "NVIDIA-A100=12" in r.stdout


def test_cli_bad_input_is_one_line_and_exit_2(server: Server, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: modelplane/v1\nkind: TrainingJob\nmetadata: {name: x}\nspec:\n  queue: nope\n"
                   "  template: {command: [ls]}\n")
    r = server.cli("apply", "-f", str(bad))
    assert r.returncode == 2 and "queue 'nope' does not exist" in r.stderr and "Traceback" not in r.stderr
    bad.write_text("kind: [unclosed")
    r = server.cli("apply", "-f", str(bad))
    assert r.returncode == 2 and "not valid YAML" in r.stderr
    r = server.cli("describe", "job", "ghost")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = server.cli("apply", "-f", str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_cli_without_a_server_says_how_to_start_one(tmp_path):
    from tests.integration.conftest import make_server

    s = make_server(tmp_path)
    r = s.cli("get", "jobs")
    assert r.returncode == 2 and "make up" in r.stderr
