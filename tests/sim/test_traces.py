"""Trace loaders on the real files in ../shared/data/traces."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from modelplane.sim.traces import TraceError
from modelplane.sim.traces.itp import load_itp_jobs
from modelplane.sim.traces.openb import load_openb_nodes, load_openb_pods
from modelplane.sim.traces.philly import load_philly_jobs, load_philly_machines, load_philly_vcs
from modelplane.sim.traces.spot import load_spot_nodes

ROOT = Path("../shared/data/traces")
if not ROOT.is_dir():  # pragma: no cover - the data must be there; say how to get it
    pytest.fail("../shared/data/traces not found: run the tests from the repository root next to ../shared", pytrace=False)


def test_openb_cluster_matches_the_paper() -> None:
    nodes = load_openb_nodes()
    assert len(nodes) == 1523 and sum(n.gpu_count for n in nodes) == 6212
    gpu_nodes = load_openb_nodes("openb_node_list_gpu_node.csv")
    assert len(gpu_nodes) == 1213 and sum(n.gpu_count for n in gpu_nodes) == 6212
    assert {n.gpu_model for n in gpu_nodes} == {"G2", "T4", "G3", "P100", "V100M32", "V100M16", "A10"}
    assert all(n.gpu_model is None for n in nodes if n.gpu_count == 0)


def test_openb_pod_lists() -> None:
    pods = load_openb_pods("default")
    assert len(pods) == 8152
    total = sum(p.request.total_gpu_milli for p in pods)
    assert abs(total / 6_212_000 - 0.98) < 0.01
    assert all(p.request.gpu_milli == 0 for p in pods if p.request.gpu_count == 0)
    spec = load_openb_pods("gpuspec33")
    typed = [p for p in spec if p.request.gpu_models]
    assert typed and all(set(p.request.gpu_models) <= {"G2", "T4", "G3", "P100", "V100M32", "V100M16", "A10"} for p in typed)
    multi = load_openb_pods("multigpu50")  # no gpu_spec / time columns in this file
    assert multi and multi[0].creation_time is None


def test_philly() -> None:
    jobs = load_philly_jobs()
    assert len(jobs) == 82247
    assert len({j.vc for j in jobs}) == 15
    assert jobs[0].submit == 0 and all(a.submit <= b.submit for a, b in itertools.pairwise(jobs))
    assert max(j.gpus for j in jobs) == 128
    vcs = load_philly_vcs()
    assert len(vcs) == 11 and vcs["6214e9"] == 64
    assert len(load_philly_machines()) == 552


def test_itp_and_spot() -> None:
    jobs = load_itp_jobs(1)
    assert len(jobs) == 1595 and max(j.gpus for j in jobs) <= 64
    nodes = load_spot_nodes()
    assert len(nodes) == 4278 and sum(n.gpu_count for n in nodes) == 10412
    assert any(n.gpu_model == "H800" for n in nodes)


def test_missing_file_and_bad_columns_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="not found") as e:
        load_philly_jobs(root=tmp_path)
    assert "../shared/data/traces" in e.value.hint
    (tmp_path / "philly-2017").mkdir()
    (tmp_path / "philly-2017" / "philly_jobs_82k_from_pollux.csv").write_text("when,what\n1,2\n")
    with pytest.raises(TraceError, match="lacks column"):
        load_philly_jobs(root=tmp_path)
