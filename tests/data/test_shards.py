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
        loader: tud.DataLoader[str] = tud.DataLoader(ds, batch_size=None, num_workers=2)
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


def _packed(tmp_path: Path, n: int = 120, shard_size: int = 16 << 10) -> tuple[dict[str, bytes], Path]:
    files = make_tree(tmp_path / "src", n=n)
    pack(str(tmp_path / "src"), str(tmp_path / "ds"), shard_size=shard_size)
    return files, tmp_path / "ds"


@pytest.mark.parametrize("verify", [True, "shard", "record", False])
def test_every_read_path_returns_the_packed_bytes(tmp_path: Path, verify: bool | str) -> None:
    files, dest = _packed(tmp_path)
    ds = ShardedDataset(str(dest), verify=verify)  # type: ignore[arg-type]
    want = [files[k] for k in ds.keys]
    assert [ds.read(i) for i in range(len(ds))] == want
    assert ds.read_many(range(len(ds))) == want
    assert [bytes(ds.read_view(i)) for i in range(len(ds))] == want
    assert all(type(p) is bytes for p in ds.read_many([0, len(ds) - 1]))
    assert [p for _, p in ds.iter_epoch(epoch=1, batch=7)] == [want[i] for i in ds.order(epoch=1).tolist()]


def test_index_keeps_a_crc_per_shard_that_matches_the_file(tmp_path: Path) -> None:
    _, dest = _packed(tmp_path)
    ds = ShardedDataset(str(dest))
    assert len(ds.shards) > 1
    for s in ds.shards:
        assert s["crc32c"] == tfrecord.crc32c((dest / s["name"]).read_bytes())


@settings(max_examples=25, deadline=None)
@given(picks=st.lists(st.integers(0, 59), max_size=80), batch=st.integers(1, 9))
def test_batch_reads_match_single_reads(tmp_path_factory: pytest.TempPathFactory, picks: list[int],
                                        batch: int) -> None:
    ds = _shared_ds(tmp_path_factory)
    assert ds.read_many(picks) == [ds.read(i) for i in picks]
    assert list(ds.iter_epoch(epoch=3, seed=1, batch=batch)) == [
        (ds.keys[i], ds.read(i)) for i in ds.order(epoch=3, seed=1).tolist()]


_SHARED: dict[str, ShardedDataset] = {}


def _shared_ds(factory: pytest.TempPathFactory) -> ShardedDataset:
    if "ds" not in _SHARED:
        root = factory.mktemp("shared")
        make_tree(root / "src", n=60)
        pack(str(root / "src"), str(root / "ds"), shard_size=8 << 10)
        _SHARED["ds"] = ShardedDataset(str(root / "ds"))
    return _SHARED["ds"]


def test_a_damaged_shard_keeps_its_intact_samples_readable(tmp_path: Path) -> None:
    files, dest = _packed(tmp_path, shard_size=1 << 20)
    ds = ShardedDataset(str(dest))
    assert len(ds.shards) == 1
    bad = next(j for j in range(len(ds)) if ds._length[j] > 10)
    shard = dest / ds.shards[0]["name"]
    raw = bytearray(shard.read_bytes())
    raw[int(ds._offset[bad]) + 12 + 5] ^= 0x40
    shard.write_bytes(bytes(raw))
    ds = ShardedDataset(str(dest))
    with pytest.raises(CorruptRecord, match=f"{ds.keys[bad]}.*CRC32C"):
        ds.read(bad)
    with pytest.raises(CorruptRecord, match="CRC32C"):
        ds.read_many([0, bad])
    good = [i for i in range(len(ds)) if i != bad]
    assert ds.read_many(good) == [files[ds.keys[i]] for i in good]


def test_an_index_that_disagrees_with_its_shard_is_caught(tmp_path: Path) -> None:
    import json

    _, dest = _packed(tmp_path, shard_size=1 << 20)
    index = json.loads((dest / INDEX_NAME).read_text())
    i = next(j for j, n in enumerate(index["length"]) if n > 1)
    index["length"][i] -= 1  # the shard (and its CRC) are intact; the index lies about one record
    (dest / INDEX_NAME).write_text(json.dumps(index))
    ds = ShardedDataset(str(dest))
    with pytest.raises(CorruptRecord, match="has length"):
        ds.read(i)


def test_datasets_packed_without_shard_crcs_are_checked_per_record(tmp_path: Path) -> None:
    import json

    files, dest = _packed(tmp_path)
    index = json.loads((dest / INDEX_NAME).read_text())
    for s in index["shards"]:
        del s["crc32c"]
    (dest / INDEX_NAME).write_text(json.dumps(index))
    ds = ShardedDataset(str(dest))
    assert ds.read_many(range(len(ds))) == [files[k] for k in ds.keys]
    with pytest.raises(DataError, match="verify='shard' needs"):
        ShardedDataset(str(dest), verify="shard")
    with pytest.raises(DataError, match="not a verification mode"):
        ShardedDataset(str(dest), verify="yes")  # type: ignore[arg-type]


def test_batch_reads_refuse_bad_indices(tmp_path: Path) -> None:
    _, dest = _packed(tmp_path, n=10)
    ds = ShardedDataset(str(dest))
    with pytest.raises(IndexError, match="sample 10 out of range"):
        ds.read_many([0, 10])
    with pytest.raises(IndexError, match="sample -1"):
        ds.read_many([-1])
    with pytest.raises(IndexError):
        ds.read_view(10)
    with pytest.raises(DataError, match="flat sequence"):
        ds.read_many([[0, 1]])  # type: ignore[list-item]
    assert ds.read_many([]) == []


def test_views_outlive_close_and_reads_reopen(tmp_path: Path) -> None:
    files, dest = _packed(tmp_path, n=10)
    with ShardedDataset(str(dest)) as ds:
        i = next(j for j in range(len(ds)) if ds._length[j] > 0)
        view = ds.read_view(i)
    assert bytes(view) == files[ds.keys[i]]  # the map is kept while the view lives
    assert ds.read(i) == files[ds.keys[i]]  # and a read after close maps the shard again
    ds.close()


def test_pickled_dataset_reads_in_a_fresh_process(tmp_path: Path) -> None:
    import multiprocessing as mp

    files, dest = _packed(tmp_path, n=30)
    ds = ShardedDataset(str(dest))
    ds.read(0)  # maps a shard here; the child must map its own
    with mp.get_context("spawn").Pool(1) as pool:
        got = pool.apply(_read_all, (ds,))
    assert got == [files[k] for k in ds.keys]


def _read_all(ds: ShardedDataset) -> list[bytes]:
    return ds.read_many(range(len(ds)))


def test_map_dataset_batches_go_through_read_many(tmp_path: Path) -> None:
    import torch.utils.data as tud

    from modelplane.data.torch_data import ShardMapDataset

    files, dest = _packed(tmp_path, n=40)
    shards = ShardedDataset(str(dest))
    ds = ShardMapDataset(shards, transform=lambda k, p: (k, p))
    assert ds.__getitems__([3, 1]) == [(shards.keys[3], files[shards.keys[3]]), (shards.keys[1], files[shards.keys[1]])]
    loader: tud.DataLoader[tuple[str, bytes]] = tud.DataLoader(ds, batch_size=6, num_workers=2, collate_fn=list)
    got = [item for batch in loader for item in batch]
    assert got == [(k, files[k]) for k in shards.keys]


def test_missing_or_truncated_shards_are_named(tmp_path: Path) -> None:
    _, dest = _packed(tmp_path, n=20, shard_size=1 << 20)
    ds = ShardedDataset(str(dest))
    shard = dest / ds.shards[0]["name"]
    shard.write_bytes(b"")
    with pytest.raises(CorruptRecord, match="is empty"):
        ShardedDataset(str(dest)).read(0)
    shard.unlink()
    with pytest.raises(DataError, match="is missing"):
        ShardedDataset(str(dest)).read(0)
