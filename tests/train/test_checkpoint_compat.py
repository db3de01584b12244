"""The checkpoint manager across torch releases: torch 2.11 (seen on an H100 machine) returns the
global metadata from ``dcp.save`` before the writer's ``finish`` fills ``storage_data``; the
commit must still list this rank's data files (from its own writer) and resume must work."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from modelplane.train.checkpoint import CheckpointManager
from modelplane.train.manifest import MANIFEST_NAME, Manifest


def _model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(8, 4)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    return model, opt


@pytest.mark.parametrize("asynchronous", [True, False])
def test_commit_lists_data_files_when_dcp_returns_no_storage_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, asynchronous: bool
) -> None:
    real_save = CheckpointManager._dcp_save

    def save_without_storage_data(self: CheckpointManager, state: dict[str, Any], writer: Any) -> Any:
        metadata = real_save(self, state, writer)
        return dataclasses.replace(metadata, storage_data=None)

    monkeypatch.setattr(CheckpointManager, "_dcp_save", save_without_storage_data)
    model, opt = _model()
    mgr = CheckpointManager(str(tmp_path / "ckpt"), asynchronous=asynchronous)
    mgr.track(model=model, optimizer=opt)
    record = mgr.save(3)
    mgr.wait()
    assert record.error is None
    step = Path(record.path)
    manifest = Manifest.from_json((step / MANIFEST_NAME).read_bytes(), where=str(step))
    data_files = [name for name in manifest.files if name.startswith("__0_")]
    assert data_files, f"the manifest lists no tensor data file: {sorted(manifest.files)}"
    assert ".metadata" in manifest.files
    mgr.close()

    expected = [p.detach().clone() for p in model.parameters()]
    fresh = nn.Linear(8, 4)
    mgr2 = CheckpointManager(str(tmp_path / "ckpt"))
    mgr2.track(model=fresh)
    assert mgr2.resume() == 3
    for a, b in zip(expected, fresh.parameters(), strict=True):
        assert torch.equal(a, b)
    mgr2.close()
