"""Packing small files into TFRecord shards; random access, deterministic resumable order, torch adapters."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.data import tfrecord
from modelplane.data.errors import CorruptRecord, DataError
from modelplane.data.order import epoch_order, rank_stream, worker_stream
from modelplane.data.shards import INDEX_NAME, PackProgress, ShardedDataset, pack


def make_tree(root: Path, n: int = 200, seed: int = 1) -> dict[str, bytes]:
    import random

    rnd = random.Random(seed)
    files = {}
    for i in range(n):
        key = f"class{i % 3}/sample-{i:05d}.bin"
        data = rnd.randbytes(rnd.randint(0, 3000))
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
        files[key] = data
    return files


# Written by TensorFlow's TFRecordWriter (records b"foo", then b"foo", b"bar"); from Apache Beam's
# tfrecordio tests, which use the same bytes to check compatibility.
FOO_RECORD_BASE64 = "AwAAAAAAAACwmUkOZm9vYYq+/g=="
FOO_BAR_RECORD_BASE64 = "AwAAAAAAAACwmUkOZm9vYYq+/gMAAAAAAAAAsJlJDmJhckYA5cg="


def test_records_are_byte_identical_to_tensorflow() -> None:
    assert tfrecord.encode_record(b"foo") == base64.b64decode(FOO_RECORD_BASE64)
    stream = io.BytesIO(base64.b64decode(FOO_BAR_RECORD_BASE64))
    assert list(tfrecord.iter_records(stream)) == [b"foo", b"bar"]


def test_pack_round_trip_with_random_access(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src")
    seen: list[PackProgress] = []
    result = pack(str(tmp_path / "src"), str(tmp_path / "ds"), shard_size=64 << 10, progress=seen.append)
    assert result.samples == len(files) and result.shards > 1
    assert seen[-1].files_done == len(files)
    ds = ShardedDataset(str(tmp_path / "ds"))
    assert sorted(ds.keys) == sorted(files)
    for key, data in files.items():
        assert ds.get(key) == data
    assert ds[0] == files[ds.keys[0]]
    # Every shard is a plain TFRecord file, readable record by record.
    payloads = []
    for s in ds.shards:
        with open(tmp_path / "ds" / s["name"], "rb") as f:
            payloads += list(tfrecord.iter_records(f))
    assert payloads == [files[k] for k in ds.keys]


def test_corrupt_record_is_detected(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", n=10)
    pack(str(tmp_path / "src"), str(tmp_path / "ds"))
    ds = ShardedDataset(str(tmp_path / "ds"))
    shard = tmp_path / "ds" / ds.shards[0]["name"]
    raw = bytearray(shard.read_bytes())
    i = next(j for j in range(len(ds)) if ds._length[j] > 0)
    raw[int(ds._offset[i]) + 12 + 1] ^= 0x01
    shard.write_bytes(bytes(raw))
    with pytest.raises(CorruptRecord, match="CRC32C"):
        ShardedDataset(str(tmp_path / "ds")).read(i)


def test_repack_in_place_replaces_the_index_atomically(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", n=20)
    pack(str(tmp_path / "src"), str(tmp_path / "ds"), shard_size=4096)
    old = {s["name"] for s in ShardedDataset(str(tmp_path / "ds")).shards}
    (tmp_path / "src" / "new.bin").write_bytes(b"n")
    pack(str(tmp_path / "src"), str(tmp_path / "ds"), shard_size=4096)
    ds = ShardedDataset(str(tmp_path / "ds"))
    assert ds.get("new.bin") == b"n"
    assert not old & set(os.listdir(tmp_path / "ds"))


def test_bad_input_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        pack(str(tmp_path / "missing"), str(tmp_path / "ds"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no files"):
        pack(str(tmp_path / "empty"), str(tmp_path / "ds"))
    with pytest.raises(DataError, match="not a packed dataset"):
        ShardedDataset(str(tmp_path / "empty"))
    assert not (tmp_path / "ds" / INDEX_NAME).exists()


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 300), world=st.integers(1, 5), workers=st.integers(1, 4), seed=st.integers(0, 10),
       consumed_frac=st.floats(0, 1), mode=st.sampled_from(["global", "shards", "none"]))
def test_order_is_a_partition_and_resumes_exactly(n: int, world: int, workers: int, seed: int,
                                                  consumed_frac: float, mode: str) -> None:
    sizes = [n // 3, n // 3, n - 2 * (n // 3)]
    order = epoch_order(n, seed=seed, epoch=2, mode=mode, shard_sizes=sizes)  # type: ignore[arg-type]
    assert sorted(order.tolist()) == list(range(n))
    assert (order == epoch_order(n, seed=seed, epoch=2, mode=mode, shard_sizes=sizes)).all()  # type: ignore[arg-type]
    streams = [rank_stream(order, rank=r, world=world) for r in range(world)]
    assert len({len(s) for s in streams}) <= 1
    assert set().union(*(set(s.tolist()) for s in streams)) == set(range(n))
    # Workers interleaved round-robin (as the DataLoader does) reproduce the rank stream after a resume.
    s = streams[0]
    consumed = int(consumed_frac * len(s))
    parts = [worker_stream(s, worker=w, num_workers=workers, consumed=consumed).tolist() for w in range(workers)]
    merged = [parts[j % workers][j // workers] for j in range(len(s) - consumed)]
    assert merged == s[consumed:].tolist()


def test_epochs_differ_and_seed_matters() -> None:
    a = epoch_order(1000, seed=0, epoch=0)
    assert not (a == epoch_order(1000, seed=0, epoch=1)).all()
    assert not (a == epoch_order(1000, seed=1, epoch=0)).all()


def test_torch_adapters_shard_by_rank_and_worker_and_resume(tmp_path: Path) -> None:
    import torch.utils.data as tud

    from modelplane.data.torch_data import ShardIterableDataset, ShardMapDataset

    files = make_tree(tmp_path / "src", n=50)
    pack(str(tmp_path / "src"), str(tmp_path / "ds"), shard_size=8 << 10)
    shards = ShardedDataset(str(tmp_path / "ds"))
    assert ShardMapDataset(shards)[3] == files[shards.keys[3]]

    def key_only(key: str, payload: bytes) -> str:
        assert payload == files[key]
        return key

    seen = []
    for rank in range(2):
        ds = ShardIterableDataset(shards, seed=7, rank=rank, world_size=2, transform=key_only)
        ds.set_epoch(3)
        loader = tud.DataLoader(ds, batch_size=None, num_workers=2)
        got = list(loader)
        assert got == [shards.keys[i] for i in ds.rank_indices()]
        seen += got
        # Resume after 9 samples with a different worker count: the rest is exactly the tail.
        ds.load_state_dict(ds.state_dict(consumed=9))
        assert list(tud.DataLoader(ds, batch_size=None, num_workers=1)) == got[9:]
    assert set(seen) == set(files)


def test_pack_killed_midway_leaves_the_previous_dataset_intact(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import textwrap

    files = make_tree(tmp_path / "src", n=600)
    pack(str(tmp_path / "src"), str(tmp_path / "ds"), shard_size=4096)
    (tmp_path / "src" / "extra.bin").write_bytes(b"new")
    script = textwrap.dedent(
        f"""
        import sys
        from modelplane.data.shards import pack
        def progress(p):
            if p.files_done >= 256:
                print("halfway", flush=True)
                sys.stdin.read()  # wait here until killed
        pack({str(tmp_path / "src")!r}, {str(tmp_path / "ds")!r}, shard_size=4096, progress=progress)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(Path(pack.__code__.co_filename).parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"halfway"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ds = ShardedDataset(str(tmp_path / "ds"))
    assert {k: ds.get(k) for k in ds.keys} == files  # the old pack, whole; the new one invisible
