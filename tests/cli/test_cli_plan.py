"""`modelplane plan`: the ranked table, the JSON launch settings, and one-line errors; both as the
installed command (a subprocess) and through Typer's runner on a fresh app it registers on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from modelplane import cli_plan
from modelplane.train.planner import Cluster, TransformerShape, device, recommend

REPO = Path(__file__).resolve().parents[2]
GPT_6_7B = ["--layers", "32", "--hidden", "4096", "--heads", "32", "--global-batch", "512", "--gpus", "64"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelplane", "plan", *args], capture_output=True, text=True,
                          cwd=REPO, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, timeout=120)


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        """A group, so that `plan` stays a subcommand as in the real CLI."""

    cli_plan.register(app)
    return app


def invoke(app: typer.Typer, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["plan", *args])
    return result.exit_code, result.stdout, result.stderr


def test_subprocess_prints_a_ranked_table() -> None:
    r = run(*GPT_6_7B, "--top", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "6.7B parameters" in r.stdout and "64 x a100-80gb" in r.stdout
    rows = [line for line in r.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["1", "2", "3"]
    tokens = [float(row.split("│")[12].replace(",", "")) for row in rows]
    assert tokens == sorted(tokens, reverse=True)


def test_subprocess_json_is_the_planners_best_with_launch_settings() -> None:
    r = run(*GPT_6_7B, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    plan = json.loads(r.stdout)
    shape = TransformerShape(32, 4096, 32, 51200, 2048)
    expected = recommend(shape, Cluster(device("a100-80gb"), 64, 8, 240e9, 20e9), 512, top=5)
    assert [p["config"] for p in plan["ranked"]] == [p.config.describe() for p in expected]
    best = plan["best"]
    assert best == plan["ranked"][0]
    assert best["data"] * best["tensor"] * best["pipeline"] == 64
    assert f"--nproc-per-node={min(64, 8)}" in plan["launch"]["torchrun"]
    assert f"--tensor-model-parallel-size={best['tensor']}" in plan["launch"]["megatron"]
    assert plan["launch"]["deepspeed"]["train_batch_size"] == 512
    assert plan["launch"]["env"]["MODELPLANE_PARALLELISM"].startswith(f"data={best['data']},")


def test_subprocess_unknown_device_is_one_line() -> None:
    r = run(*GPT_6_7B, "--device", "tpu-v9")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown device 'tpu-v9'" in r.stderr and "--memory-gb" in r.stderr


def test_runner_table(app: typer.Typer) -> None:
    code, stdout, _ = invoke(app, *GPT_6_7B, "--top", "2")
    assert code == 0, stdout
    assert "tok/s" in stdout and "MFU" in stdout
    assert sum(line.startswith("│") for line in stdout.splitlines()) == 2


def test_runner_custom_device_and_memory_limit(app: typer.Typer) -> None:
    """A device described by its numbers; every ranked configuration fits its (usable) memory, and
    more peak FLOP/s means more predicted throughput for the same best layout."""
    code, stdout, _ = invoke(app, *GPT_6_7B, "--device", "l4", "--memory-gb", "24", "--peak-tflops", "120",
                             "--json", "--top", "10")
    assert code == 0, stdout
    slow = json.loads(stdout)
    assert slow["device"] == {"name": "l4", "memory_bytes": 24e9, "peak_flops": 120e12}
    assert all(p["memory_gb_per_device"] <= 24 * 0.9 for p in slow["ranked"])
    code, stdout, _ = invoke(app, *GPT_6_7B, "--device", "l4", "--memory-gb", "24", "--peak-tflops", "240",
                             "--json")
    fast = json.loads(stdout)
    assert fast["best"]["tokens_per_s"] > slow["best"]["tokens_per_s"]


def test_runner_bandwidth_options_reach_the_planner(app: typer.Typer) -> None:
    base = json.loads(invoke(app, *GPT_6_7B, "--json")[1])["best"]
    slow_net = json.loads(invoke(app, *GPT_6_7B, "--json", "--inter-gbps", "1")[1])["best"]
    assert slow_net["tokens_per_s"] < base["tokens_per_s"]


@pytest.mark.parametrize(("args", "words"), [
    (["--layers", "96", "--hidden", "12288", "--heads", "96", "--global-batch", "512", "--gpus", "8",
      "--device", "a100-40gb"], "no configuration of 8 x a100-40gb fits"),
    (["--layers", "32", "--hidden", "4096", "--heads", "30", "--global-batch", "512", "--gpus", "64"],
     "not divisible by heads"),
    ([*GPT_6_7B, "--memory-gb", "-1"], "--memory-gb must be positive"),
    ([*GPT_6_7B, "--top", "0"], "--top must be at least 1"),
])
def test_runner_bad_input_is_a_clear_error(app: typer.Typer, args: list[str], words: str) -> None:
    code, stdout, stderr = invoke(app, *args)
    assert code == 2
    assert words in stderr and "Traceback" not in stderr + stdout
