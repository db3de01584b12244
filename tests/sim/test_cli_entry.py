"""run_sim end to end on small slices of real traces: summary, plots, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelplane.sim.cli_entry import SimUsageError, run_sim


def test_openb_replay_writes_summary_and_plot(tmp_path: Path) -> None:
    s = run_sim("openb:gpushare100", "bestfit", tmp_path, seed=1)
    assert s["trace"] == "openb:gpushare100" and s["policy"] == "bestfit"
    assert 0 < float(s["allocated_at_130"]) <= 100  # type: ignore[arg-type]
    assert (tmp_path / "allocation.png").stat().st_size > 1000
    assert json.loads((tmp_path / "summary.json").read_text())["placed"] == s["placed"]


def test_philly_slice_with_a_baseline_and_the_default_policy(tmp_path: Path) -> None:
    for policy in ("fifo", "default"):
        s = run_sim("philly", policy, tmp_path / policy, start_day=21, days=0.25, nodes=24, round_interval=60)
        assert s["never_started"] == 0 and int(s["jobs"]) > 50  # type: ignore[call-overload]
        for p in s["plots"]:  # type: ignore[attr-defined]
            assert Path(p).stat().st_size > 1000


def test_unknown_names_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SimUsageError, match="unknown trace"):
        run_sim("nope", "fifo", tmp_path)
    with pytest.raises(SimUsageError, match="unknown placement policy"):
        run_sim("openb", "fifo", tmp_path)
    with pytest.raises(SimUsageError, match="unknown policy"):
        run_sim("philly", "nope", tmp_path, days=0.01)
