"""Checkpoints on a real S3 server (SeaweedFS): save, atomic manifest, resume at the exact step."""

from __future__ import annotations

import uuid
from typing import Any

import torch

from modelplane.train.checkpoint import CheckpointManager
from tests.train.test_checkpoint import _job, _train


def test_save_and_resume_through_s3(s3_server: Any) -> None:
    import s3fs

    opts = s3_server.storage_options()
    fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
    bucket = f"ckpt-{uuid.uuid4().hex[:10]}"
    fs.mkdir(bucket)
    url = f"s3://{bucket}/job"
    job = _job()
    mgr = CheckpointManager(url, storage_options=opts).track(
        model=job[0], optimizer=job[1], scheduler=job[2], data=job[3]
    )
    _train(*job, steps=3)
    mgr.save(3)
    _train(*job, steps=2)
    mgr.save(5)
    mgr.close()
    names = fs.ls(f"{bucket}/job")
    assert any(n.endswith("step-000000000005") for n in names), names
    fs.invalidate_cache()
    assert fs.exists(f"{bucket}/job/step-000000000005/MANIFEST.json")

    fresh = _job(seed=1)
    mgr2 = CheckpointManager(url, storage_options=opts).track(
        model=fresh[0], optimizer=fresh[1], scheduler=fresh[2], data=fresh[3]
    )
    assert mgr2.resume() == 5
    for a, b in zip(job[0].parameters(), fresh[0].parameters(), strict=True):
        assert torch.equal(a, b)
    mgr2.close()
    fs.rm(bucket, recursive=True)
