"""The environment a task of a distributed job sees under the local backend."""

from __future__ import annotations

import json

import pytest

from modelplane.backends.base import TaskPhase
from modelplane.core.accelerators import families

DUMP_ENV = "import json, os; print(json.dumps({**os.environ, 'CWD': os.getcwd()}))"
VISIBILITY_VARS = {var for fam in families() for var in (fam.visibility_env, *fam.extra_visibility_envs)}


def run_and_read_env(local, *tasks):
    statuses = local.wait_done(tasks[0].job_id, local.launch(*tasks))
    assert all(s.phase is TaskPhase.SUCCEEDED for s in statuses), statuses
    return {t.rank: json.loads(local.log(t.job_id, t.rank)) for t in tasks}


def test_ranks_nodes_and_master_of_a_two_node_job(local, monkeypatch):
    monkeypatch.setenv("MODELPLANE_DATABASE_URL", "postgresql://admin:secret@db/modelplane")
    cmd = local.python_task(DUMP_ENV)
    # rank 0 alone on "zeta", ranks 1 and 2 on "alpha": nodes are numbered by their lowest rank
    tasks = [
        local.task("job-a", cmd, rank=0, world_size=3, node="zeta", master_addr="10.0.0.7", master_port=29611),
        local.task("job-a", cmd, rank=2, world_size=3, node="alpha", master_addr="10.0.0.7", master_port=29611),
        local.task("job-a", cmd, rank=1, world_size=3, node="alpha", master_addr="10.0.0.7", master_port=29611),
    ]
    env = run_and_read_env(local, *tasks)
    expected = {0: ("0", "1", "0", "zeta"), 1: ("0", "2", "1", "alpha"), 2: ("1", "2", "1", "alpha")}
    for rank, (local_rank, local_world, node_rank, node) in expected.items():
        e = env[rank]
        assert (e["RANK"], e["WORLD_SIZE"]) == (str(rank), "3")
        assert (e["LOCAL_RANK"], e["LOCAL_WORLD_SIZE"], e["NODE_RANK"]) == (local_rank, local_world, node_rank)
        assert (e["MASTER_ADDR"], e["MASTER_PORT"]) == ("10.0.0.7", "29611")
        assert (e["MODELPLANE_JOB_ID"], e["MODELPLANE_JOB_NAME"], e["MODELPLANE_NODE"]) == (
            "job-a", "job-a-name", node)
        assert "MODELPLANE_DATABASE_URL" not in e, "the control plane's settings must not leak into tasks"
        assert "MODELPLANE_GPU_MILLI" not in e
        # a task placed on no accelerator sees none, whatever the machine has
        assert {var: e[var] for var in VISIBILITY_VARS} == dict.fromkeys(VISIBILITY_VARS, "")


@pytest.mark.parametrize(
    ("model", "variables"),
    [
        ("A100", ["CUDA_VISIBLE_DEVICES"]),
        ("NVIDIA-H100", ["CUDA_VISIBLE_DEVICES"]),
        ("AMD-MI250", ["HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"]),
        ("Ascend-910B", ["ASCEND_RT_VISIBLE_DEVICES"]),
        ("Gaudi2", ["HABANA_VISIBLE_MODULES"]),
    ],
)
def test_device_visibility_follows_the_vendor_of_the_placement(local, model, variables):
    task = local.task(f"dev-{model.lower()}", local.python_task(DUMP_ENV), devices=(2, 5),
                      accelerator_model=model)
    env = run_and_read_env(local, task)[0]
    for var in VISIBILITY_VARS:
        assert env[var] == ("2,5" if var in variables else ""), var


def test_fractional_share_user_env_and_working_dir(local, tmp_path):
    workdir = tmp_path / "project"
    workdir.mkdir()
    task = local.task(
        "frac", local.python_task(DUMP_ENV), devices=(1,), gpu_milli=460, accelerator_model="T4",
        env={"MY_FLAG": "on", "MASTER_PORT": "4242"}, working_dir=str(workdir),
    )
    env = run_and_read_env(local, task)[0]
    assert env["MODELPLANE_GPU_MILLI"] == "460"
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["MY_FLAG"] == "on"
    assert env["MASTER_PORT"] == "4242", "the user's env goes on top of ours"
    assert env["CWD"] == str(workdir)


def test_task_python_path_cannot_break_the_wrapper(local, tmp_path):
    """A task's PYTHONPATH may shadow the standard library; the wrapper must still run it."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "json.py").write_text("raise SystemExit('shadowed json imported')\n")
    (shadow / "subprocess.py").write_text("raise SystemExit('shadowed subprocess imported')\n")
    task = local.task("shadow", local.python_task("import os; print(os.environ['PYTHONPATH'])"),
                      env={"PYTHONPATH": str(shadow)})
    [status] = local.wait_done("shadow", local.launch(task))
    assert status.phase is TaskPhase.SUCCEEDED, local.log("shadow")
    assert local.log("shadow").strip() == str(shadow)
