"""How each backend says a task will be dialled (before launch), and how a serving task's report of
the port it bound is read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelplane.backends.base import TaskLaunch, create_backend, reported_port
from modelplane.backends.k8s_render import render_job, task_host


def _tasks(world: int = 3) -> list[TaskLaunch]:
    return [
        TaskLaunch(
            job_id="job-7",
            job_name="ddp",
            pod_set="worker",
            index=r,
            rank=r,
            world_size=world,
            node=f"n{r}",
            command=["python", "train.py"],
            image="img",
        )
        for r in range(world)
    ]


def test_local_tasks_are_dialled_on_this_machine(tmp_path: Path) -> None:
    backend = create_backend("local", state_dir=tmp_path)
    assert backend.task_hosts(_tasks()) == {0: "127.0.0.1", 1: "127.0.0.1", 2: "127.0.0.1"}
    assert backend.tasks_choose_ports is False
    assert create_backend("local", state_dir=tmp_path, tasks_choose_ports=True).tasks_choose_ports is True


def test_kubernetes_hosts_are_the_pod_dns_names_the_rendered_pods_dial(tmp_path: Path) -> None:
    backend = create_backend("kubernetes", state_dir=tmp_path, api_client=object())  # no API call is made
    tasks = _tasks()
    hosts = backend.task_hosts(tasks)
    rendered = render_job(tasks)
    for pod, task in zip(rendered.pods, tasks, strict=True):
        assert hosts[task.rank] == task_host(task) == f"{pod['spec']['hostname']}.{pod['spec']['subdomain']}"
        env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
        assert env["MASTER_ADDR"] == hosts[0]


@pytest.mark.parametrize(
    ("text", "port"),
    [
        ('{"host": "10.0.0.5", "port": 41234}', 41234),
        ('{"port": 0}', None),  # not bound yet
        ('{"port": 70000}', None),
        ('{"port": "8000"}', None),
        ('{"port": true}', None),
        ('{"host": "10.0.0.5", "po', None),  # a reader racing a writer that does not rename
        ("[8000]", None),
        ("", None),
    ],
)
def test_a_reported_port_is_read_only_when_it_is_one(text: str, port: int | None) -> None:
    assert reported_port(text) == port
