"""A sensitive packed shard set end to end on a real control plane: the owner packs small files and
protects the shard set with ``modelplane data protect`` (CLI, over HTTP), the TEE nodes attest with
the real ``tee-dcap`` quotes, a confidential job reads every sample through ``ShardedDataset`` and
the torch DataLoader (two workers) with the key released to it, and a job without ``spec.tee`` is
refused the key, the refusal naming the dataset and the fix."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelplane.data import sensitive
from modelplane.data.shards import INDEX_NAME, SEALED_SEGMENT, pack
from tests.api.test_datasets_api import CLUSTER, job, quote_body
from tests.data.test_shards import make_tree
from tests.integration.test_sensitive_datasets import REPO, ControlPlane

pytestmark = pytest.mark.integration

READER = """
import hashlib, sys
import torch.utils.data as tud
from modelplane.data import sensitive
from modelplane.data.shards import ShardedDataset
from modelplane.data.torch_data import ShardMapDataset
try:
    shards = ShardedDataset(sys.argv[1])  # no key given: released to this job by the control plane
except sensitive.KeyReleaseDenied as exc:
    print("REFUSED:", exc.message, flush=True)
    sys.exit(3)
loader = tud.DataLoader(ShardMapDataset(shards, transform=lambda k, p: (k, p)), batch_size=16, num_workers=2,
                        collate_fn=list)
h = hashlib.sha256()
n = 0
for batch in loader:
    for key, payload in batch:
        h.update(key.encode() + b"\\0" + payload)
        n += 1
print("samples", n, "sha", h.hexdigest(), flush=True)
"""


@pytest.fixture
def plane(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    cp = ControlPlane(db_url, tmp_path)
    monkeypatch.setenv(sensitive.API_URL_ENV, cp.url)  # what the job controller tells the tasks
    yield cp.start()
    cp.stop()


def reader_job(name: str, data: Path, tee: str | None = None, declare: bool = True) -> dict[str, Any]:
    doc = job(name, tee=tee, datasets=[str(data)] if declare else [])
    doc["spec"]["template"]["command"] = [sys.executable, "-c", READER, str(data)]
    return doc


@pytest.mark.timeout(300)
def test_a_confidential_job_reads_a_sensitive_shard_set(plane: ControlPlane, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src", n=300)
    data = tmp_path / "shards"
    pack(str(tmp_path / "src"), str(data), shard_size=64 << 10)
    h = hashlib.sha256()
    for key in sorted(files):
        h.update(key.encode() + b"\0" + files[key])
    admin = plane.client(plane.admin_token)
    assert admin.post("/cluster/import", json=CLUSTER).status_code == 200
    assert admin.post("/teams", json={"name": "research"}).status_code == 201
    assert admin.post("/service-accounts", json={"name": "owner", "team": "research"}).status_code == 201
    owner_key = admin.post(
        "/service-accounts/owner/api-keys", json={"scopes": ["datasets:read", "datasets:write"]}
    ).json()["key"]

    env = {
        "MODELPLANE_API_URL": plane.url,
        "MODELPLANE_TOKEN": owner_key,
        "MODELPLANE_HOME": str(tmp_path / "cli"),
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(tmp_path),
        "COLUMNS": "400",
    }
    r = subprocess.run(
        [sys.executable, "-m", "modelplane", "data", "protect", str(data)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    n_files = len(list(data.iterdir()))
    assert f"file://{data} is sensitive: encrypted {n_files} file(s)" in r.stdout
    for f in data.iterdir():  # every shard and the index, in small segments for random access
        header = sensitive.parse_header(f.read_bytes(), f.name)
        assert header is not None and header.segment == SEALED_SEGMENT and header.uri == f"file://{data}"
    assert b"sample-00001" not in (data / INDEX_NAME).read_bytes()

    for node, name in (("tdx-0", "sample/tdx_quote"), ("sgx-0", "sample/sgx_quote")):
        assert admin.post(f"/nodes/{node}/attestation", json=quote_body(name)).json()["ok"]
    assert admin.post("/jobs", json=reader_job("confidential", data, tee="any")).status_code == 201
    assert admin.post("/jobs", json=reader_job("sneaky", data, declare=False)).status_code == 201

    done = plane.wait("confidential")
    logs = plane.logs("confidential")
    assert done["state"] == "Succeeded", logs
    assert f"samples {len(files)} sha {h.hexdigest()}" in logs

    done = plane.wait("sneaky")
    logs = plane.logs("sneaky")
    assert done["state"] == "Failed"
    assert (
        f"REFUSED: packed dataset {data} is sensitive and its key was refused: key release for file://{data} "
        f"refused: dataset file://{data} is sensitive; job sneaky is not confidential: set spec.tee" in logs
    )
    admin.close()
