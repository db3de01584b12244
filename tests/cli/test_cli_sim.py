"""`modelplane sim` end to end on a real trace (the openb default pod list, one seed)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelplane", "sim", *args], capture_output=True, text=True,
                          cwd=REPO, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin",
                                         "MPLBACKEND": "Agg"}, timeout=300)


def test_sim_openb_writes_summary_and_plot(tmp_path):
    r = run("openb", "--policy", "bestfit", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout)
    assert (tmp_path / "summary.json").exists()
    assert any(p.suffix == ".png" for p in tmp_path.iterdir())
    assert "bestfit" in json.dumps(summary)


def test_sim_unknown_trace_is_one_line(tmp_path):
    r = run("nosuchtrace", "--out", str(tmp_path))
    assert r.returncode == 2 and "unknown trace" in r.stderr and "Traceback" not in r.stderr
