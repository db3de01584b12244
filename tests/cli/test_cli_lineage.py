"""`modelplane lineage` against a live API server (uvicorn in a thread, real HTTP): trees, impact,
JSON, search, recording events, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelplane.api.app import create_app
from modelplane.api.auth import ensure_admin_token
from modelplane.api.security import release_security
from modelplane.cli import app as cli_app
from modelplane.data.openlineage_events import run_event, to_json
from modelplane.store import Store

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    import uvicorn

    home = tmp_path_factory.mktemp("home")
    store = Store(f"sqlite:///{home / 'modelplane.db'}")
    token = ensure_admin_token(store, home, fast_hashing=True) or ""
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "the API server did not start"
        time.sleep(0.05)
    env = {"MODELPLANE_API_URL": f"http://127.0.0.1:{port}", "MODELPLANE_TOKEN": token,
           "MODELPLANE_HOME": str(home), "MODELPLANE_CONFIG": str(home / "none.yaml")}
    events = home / "events"
    events.mkdir()
    for i, (ev, kind) in enumerate([
        (run_event(job="prep", inputs=[("s3://raw", "a"), ("s3://raw", "b")], outputs=[("s3://ds", "clean")]), "pipeline"),
        (run_event(job="train", inputs=[("s3://ds", "clean")], outputs=[("models", "llm:1")]), "training"),
        (run_event(job="chat", inputs=[("models", "llm:1")]), "deployment"),
    ]):
        path = events / f"{i}.json"
        path.write_text(to_json(ev))
        r = CliRunner().invoke(cli_app, ["lineage", "record", str(path), "--job-kind", kind], env=env)
        assert r.exit_code == 0, r.stderr
        assert f"recorded {kind}" in r.stdout
    yield env
    srv.should_exit = True
    thread.join(timeout=10)
    release_security(store)
    store.close()


def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli_app, ["lineage", *args], env=env)
    return r.exit_code, r.stdout, r.stderr


def test_upstream_is_a_tree_to_the_raw_sources(server: dict[str, str]) -> None:
    code, out, _ = cli(server, "upstream", "deployment", "chat", "--depth", "10")
    assert code == 0
    lines = out.splitlines()
    assert "deployment chat" in lines[0] and "made from" in lines[0]
    order = ["model llm:1", "training train", "dataset clean", "pipeline prep", "dataset a"]
    at = [next(i for i, line in enumerate(lines) if name in line) for name in order]
    assert at == sorted(at)
    indent = [len(lines[i]) - len(lines[i].lstrip("│ ├└─")) for i in at]
    assert indent == sorted(indent) and len(set(indent)) == len(indent)  # each hop one level deeper


def test_downstream_depth_limits_the_walk(server: dict[str, str]) -> None:
    code, out, _ = cli(server, "downstream", "dataset", "a", "--namespace", "s3://raw", "--depth", "2")
    assert code == 0 and "pipeline prep" in out and "dataset clean" in out and "training" not in out


def test_impact_and_json(server: dict[str, str]) -> None:
    code, out, _ = cli(server, "impact", "dataset", "b")
    assert code == 0 and "1 deployment(s) downstream" in out and "deployment chat" in out and "5 hops" in out
    code, out, _ = cli(server, "impact", "dataset", "b", "--kind", "model", "--json")
    assert code == 0 and [n["name"] for n in json.loads(out)["items"]] == ["llm:1"]
    code, out, _ = cli(server, "upstream", "model", "llm:1", "--json", "--depth", "1")
    body = json.loads(out)
    assert code == 0 and body["items"][0]["name"] == "train" and body["edges"]


def test_show_and_search(server: dict[str, str]) -> None:
    code, out, _ = cli(server, "show", "dataset", "clean")
    assert code == 0 and "inputs (1):" in out and "pipeline prep" in out and "training train" in out
    code, out, _ = cli(server, "search", "ll", "--kind", "model")
    assert code == 0 and "model llm:1" in out
    code, out, _ = cli(server, "search", "zzz")
    assert code == 0 and "no matching nodes" in out


def test_errors_are_one_line_and_exit_2(server: dict[str, str], tmp_path: Path) -> None:
    code, _, err = cli(server, "upstream", "dataset", "nope")
    assert code == 2 and "no dataset named 'nope'" in err and "Traceback" not in err
    code, _, err = cli(server, "downstream", "dataset", "a", "--depth", "0")
    assert code == 2 and "depth 0 is out of range" in err and "1..64" in err
    code, _, err = cli(server, "upstream", "table", "a")
    assert code == 2 and "unknown lineage node kind" in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"eventType": "COMPLETE"}))
    code, _, err = cli(server, "record", str(bad))
    assert code == 2 and "eventTime" in err
    bad.write_text("{not json")
    code, _, err = cli(server, "record", str(bad))
    assert code == 2 and "not valid JSON" in err
    code, _, err = cli({**server, "MODELPLANE_API_URL": f"http://127.0.0.1:{_free_port()}"}, "search")
    assert code == 2 and "cannot reach the modelplane server" in err


def test_the_installed_command_has_the_lineage_group() -> None:
    r = subprocess.run([sys.executable, "-m", "modelplane", "lineage", "--help"], capture_output=True, text=True,
                       cwd=REPO, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 0, r.stderr
    for cmd in ("upstream", "downstream", "impact", "show", "search", "record"):
        assert cmd in r.stdout
