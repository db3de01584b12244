"""`modelplane cost report` against a running `modelplane up` whose settings name storage sources: the
Storage section prices what a real EC store and an SSD folder hold, and a bad source is reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelplane.data.ecstore import ErasureCodedStore
from modelplane.data.erasure import ErasureProfile
from tests.integration.conftest import make_server

pytestmark = pytest.mark.integration


def test_cost_report_has_a_storage_section(tmp_path: Path) -> None:
    ssd = tmp_path / "ssd" / "teams" / "research" / "features"
    ssd.mkdir(parents=True)
    (ssd / "part-0").write_bytes(b"f" * 2_000_000)
    ec = ErasureCodedStore.at_root(tmp_path / "ec", ErasureProfile(k=4, m=2), durable=False)
    ec.put("teams/product/corpus/shard-0", b"c" * 3_000_000)
    server = make_server(tmp_path)
    server.env["MODELPLANE_STORAGE_SOURCES"] = json.dumps(
        [f"hot={tmp_path / 'ssd'}", f"ec={tmp_path / 'ec'}", f"ec={tmp_path / 'missing'}"])
    server.env["MODELPLANE_STORAGE_PRICES"] = json.dumps({"ec": 0.05})
    server.start()
    try:
        r = server.cli("cost", "report", "--since", "30d")
    finally:
        server.stop()
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "Storage" in out and "teams/research/features" in out and "teams/product/corpus" in out
    tiers = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["hot"], ["ec"])}
    assert tiers["hot"][1] == tiers["hot"][2] == "0.002"  # GB logical = stored on a plain folder
    assert float(tiers["ec"][2]) > float(tiers["ec"][1])  # parity is paid for
    assert tiers["ec"][4] == "0.05" and tiers["hot"][4] == "0.08"  # the setting overrides one tier only
    assert "missing is not a directory" in r.stderr.replace("\n", " ")
