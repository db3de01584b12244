"""Multi-rank checkpoints with real processes (gloo, DDP): SIGTERM at a step boundary, resume that
matches an uninterrupted run, and resharding onto fewer and more ranks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from modelplane.train.data_position import ResumableBatchSampler
from tests.train.ddp_worker import GLOBAL_BATCH, make_data, make_model, make_optim
from tests.train.launch import launch

pytestmark = pytest.mark.integration


def _reference(steps: int) -> dict[str, torch.Tensor]:
    """The same job in one process with the whole global batch: what any world size must reproduce."""
    x, y = make_data()
    model = make_model(0.0)
    opt, sched = make_optim(model)
    sampler = ResumableBatchSampler(len(x), global_batch_size=GLOBAL_BATCH, seed=3)
    done = 0
    while done < steps:
        for idx in sampler:
            loss = nn.functional.mse_loss(model(x[idx]).squeeze(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            sampler.advance()
            done += 1
            if done == steps:
                break
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _run(world: int, ckpt: Path, out: Path, steps: int, *extra: str) -> dict:
    launch("ddp_worker.py", world, ["--ckpt", str(ckpt), "--steps", str(steps), "--out", str(out), *extra])
    return torch.load(out)


def test_sigterm_resume_and_reshard_across_world_sizes(tmp_path: Path) -> None:
    """2 ranks, SIGTERM on rank 1 at step 4 -> 1 rank resumes, SIGTERM at 6 -> 2 ranks finish at 8.

    Asynchronous saves every 2 steps run throughout (on their own process group, beside DDP's).
    The end state equals the same job run in one process without interruption."""
    ck = tmp_path / "ck"
    first = _run(2, ck, tmp_path / "a.pt", 8, "--sigterm-at", "4", "--save-every", "3")
    assert first["preempted"] and first["step"] == 4
    assert (ck / "step-000000000004" / "MANIFEST.json").exists()
    second = _run(1, ck, tmp_path / "b.pt", 8, "--sigterm-at", "6", "--save-every", "3")
    assert (second["resumed_from"], second["step"], second["preempted"]) == (4, 6, True)
    third = _run(2, ck, tmp_path / "c.pt", 8, "--save-every", "3")
    assert (third["resumed_from"], third["step"], third["preempted"]) == (6, 8, False)
    expected = _reference(8)
    for name, value in expected.items():
        torch.testing.assert_close(third["params"][name], value, rtol=1e-5, atol=1e-6, msg=name)
