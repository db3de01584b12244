from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import modelplane.train as mt
from modelplane.core.errors import InvalidSpec
from modelplane.train.heartbeat import read_heartbeat
from modelplane.train.preempt import PreemptionWatcher


def test_distributed_info_from_env() -> None:
    info = mt.DistributedInfo.from_env(
        {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4", "MASTER_PORT": "1234"}
    )
    assert (info.rank, info.local_rank, info.node_rank, info.num_nodes, info.master_port) == (
        5,
        1,
        1,
        2,
        1234,
    )
    assert mt.DistributedInfo.from_env({}) == mt.DistributedInfo()
    with pytest.raises(InvalidSpec, match="RANK=3 WORLD_SIZE=2"):
        mt.DistributedInfo.from_env({"RANK": "3", "WORLD_SIZE": "2"})
    with pytest.raises(InvalidSpec, match="not an integer"):
        mt.DistributedInfo.from_env({"WORLD_SIZE": "two"})


def test_init_without_platform_is_a_single_process(tmp_path: Path) -> None:
    with mt.init(str(tmp_path / "ck"), env={}) as ctx:
        assert ctx.distributed.world_size == 1 and ctx.distributed.is_chief
        model = nn.Linear(2, 2)
        ctx.checkpoint.track(model=model)
        assert ctx.checkpoint.resume() is None
        ctx.checkpoint.save(1)
        ctx.heartbeat.beat(1)  # the no-op default
    assert (tmp_path / "ck" / "step-000000000001" / "MANIFEST.json").exists()


def test_file_heartbeat_from_env_carries_progress_and_liveness(tmp_path: Path) -> None:
    env = {
        "MODELPLANE_HEARTBEAT_FILE": str(tmp_path / "hb-{rank}.json"),
        "MODELPLANE_HEARTBEAT_INTERVAL_S": "0.05",
    }
    with mt.init(str(tmp_path / "ck"), env=env) as ctx:
        ctx.heartbeat.beat(7, loss=0.5)
        first = read_heartbeat(str(tmp_path / "hb-0.json"))
        assert (
            first is not None and first["step"] == 7 and first["loss"] == 0.5 and first["pid"] == os.getpid()
        )
        deadline = time.time() + 10
        while (read_heartbeat(str(tmp_path / "hb-0.json")) or {})["seq"] <= first["seq"]:
            assert time.time() < deadline, "the liveness thread did not beat"
            time.sleep(0.02)
        assert json.loads((tmp_path / "hb-0.json").read_text())["step"] == 7  # liveness repeats the step


def test_callback_heartbeat() -> None:
    seen: list[dict] = []
    hb = mt.CallbackHeartbeat(seen.append, rank=3, clock=lambda: 42.0)
    hb.beat(1)
    hb.beat(2)
    assert [(r["rank"], r["step"], r["time"]) for r in seen] == [(3, 1, 42.0), (3, 2, 42.0)]
    assert not any(r.get("exiting") for r in seen)
    hb.stop()  # the last record says the process is on its way out, at the last step it reached
    assert seen[-1]["exiting"] is True and seen[-1]["step"] == 2


def test_sigterm_saves_at_the_step_boundary_and_stops(tmp_path: Path) -> None:
    watcher = PreemptionWatcher()
    with mt.init(str(tmp_path / "ck"), env={}, preempt=watcher) as ctx:
        model = nn.Linear(2, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ctx.checkpoint.track(model=model, optimizer=opt)
        stopped_at = None
        for step in range(1, 10):
            model(torch.ones(1, 2)).sum().backward()
            opt.step()
            if step == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-step, handled at the boundary
            if ctx.checkpoint.maybe_save(step).stop:
                stopped_at = step
                break
        assert stopped_at == 3 and "SIGTERM" in watcher.reason
        assert ctx.checkpoint.complete_steps() == [3]
    assert signal.getsignal(signal.SIGTERM) is not watcher._on_signal


def test_notice_file_counts_as_preemption(tmp_path: Path) -> None:
    notice = tmp_path / "spot-notice"
    w = PreemptionWatcher(install=False, notice_file=str(notice))
    assert not w.should_preempt()
    notice.write_text("terminate at 12:00")
    assert w.should_preempt() and "notice file" in w.reason
