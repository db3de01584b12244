"""`modelplane data pack` and `data scrub` as a user runs them."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modelplane", "data", *args], capture_output=True, text=True,
                          cwd=REPO, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_pack_then_read_back(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    for i in range(50):
        (src / "a" / f"{i:03}.txt").write_text(f"sample {i}\n")
    r = run("pack", str(src), str(tmp_path / "shards"), "--shard-size-mb", "1")
    assert r.returncode == 0, r.stderr
    assert "packed 50 files" in r.stdout
    from modelplane.data.shards import ShardedDataset

    ds = ShardedDataset(str(tmp_path / "shards"))
    assert len(ds) == 50 and ds.get("a/007.txt") == b"sample 7\n"


def test_pack_missing_source_is_one_line(tmp_path):
    r = run("pack", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_scrub_repairs_a_lost_fragment(tmp_path):
    from modelplane.data.ecstore import ErasureCodedStore

    store = ErasureCodedStore.at_root(tmp_path / "ec")
    store.put("obj", b"x" * 100_000)
    lost = next((tmp_path / "ec" / "disk1" / "frags").rglob("*.1"))
    lost.unlink()
    r = run("scrub", str(tmp_path / "ec"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "obj" in r.stdout and "repaired" in r.stdout
    assert store.get("obj") == b"x" * 100_000
    assert run("scrub", str(tmp_path / "ec")).stdout.strip() == "no damaged object"
