"""Packed shard sets protected as sensitive data: every shard and the index encrypted in place, read
back transparently (by sample, in batches, through the torch datasets) with the dataset's key, and
refused or caught when the key is missing or wrong or a byte was changed. Real files, real keys."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.data import sensitive, tfrecord
from modelplane.data.errors import CorruptRecord, DataError
from modelplane.data.sensitive import (
    DataKey,
    KeyReleaseClient,
    KeyReleaseDenied,
    SensitiveDataError,
    encrypt_dataset,
)
from modelplane.data.shards import INDEX_NAME, SEALED_SEGMENT, ShardedDataset, pack, sealing_segment
from tests.data.test_shards import make_tree

KEY = DataKey.generate()


def protected(
    tmp_path: Path, n: int = 150, shard_size: int = 48 << 10, segment: int = SEALED_SEGMENT
) -> tuple[dict[str, bytes], Path]:
    """A packed shard set, protected the way ``modelplane data protect`` does it (minus the API)."""
    files = make_tree(tmp_path / "src", n=n)
    dest = tmp_path / "ds"
    pack(str(tmp_path / "src"), str(dest), shard_size=shard_size)
    report = encrypt_dataset(str(dest), KEY, segment=segment)
    assert report.encrypted == len(list(dest.iterdir()))  # every shard and the index
    return files, dest


@pytest.mark.parametrize("segment", [SEALED_SEGMENT, 1000])  # 1000: samples span several segments
@pytest.mark.parametrize("verify", [True, "shard", "record", False])
def test_an_encrypted_shard_set_reads_back_byte_identical(
    tmp_path: Path, verify: bool | str, segment: int
) -> None:
    files, dest = protected(tmp_path, segment=segment)
    ds = ShardedDataset(str(dest), data_key=KEY, verify=verify)  # type: ignore[arg-type]
    assert ds.encryption is not None and ds.encryption.uri == f"file://{dest}" and len(ds.shards) > 1
    assert sorted(ds.keys) == sorted(files)
    want = [files[k] for k in ds.keys]
    assert [ds.read(i) for i in range(len(ds))] == want
    backwards = list(range(len(ds)))[::-1]
    assert ds.read_many(backwards) == [want[i] for i in backwards]
    assert [bytes(ds.read_view(i)) for i in range(len(ds))] == want
    assert all(ds.get(k) == v for k, v in files.items())
    assert [p for _, p in ds.iter_epoch(epoch=2, batch=7)] == [want[i] for i in ds.order(epoch=2).tolist()]


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 700), min_size=1, max_size=40),
    segment=st.sampled_from([64, 100, 4096]),
    picks=st.lists(st.integers(0, 39), max_size=60),
)
def test_any_samples_and_segment_size_read_back_exactly(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], segment: int, picks: list[int]
) -> None:
    root = tmp_path_factory.mktemp("prop")
    files = {f"f{i:03d}": os.urandom(n) for i, n in enumerate(sizes)}
    for name, data in files.items():
        (root / "src").mkdir(exist_ok=True)
        (root / "src" / name).write_bytes(data)
    pack(str(root / "src"), str(root / "ds"), shard_size=2048)
    encrypt_dataset(str(root / "ds"), KEY, segment=segment)
    ds = ShardedDataset(str(root / "ds"), data_key=KEY)
    ids = [i % len(ds) for i in picks]
    assert ds.read_many(ids) == [files[ds.keys[i]] for i in ids]
    assert [ds.read(i) for i in ids] == [files[ds.keys[i]] for i in ids]


def test_nothing_sensitive_is_left_in_the_clear(tmp_path: Path) -> None:
    files, dest = protected(tmp_path)
    names = sorted(p.name for p in dest.iterdir())
    assert INDEX_NAME in names and all(n == INDEX_NAME or n.startswith("shard-") for n in names)
    blobs = [p.read_bytes() for p in dest.iterdir()]
    assert all(b.startswith(sensitive.MAGIC) for b in blobs)
    for key, data in files.items():  # no sample name (they are in the index) and no sample content
        assert not any(key.encode() in b for b in blobs)
        assert len(data) < 32 or not any(data[:32] in b for b in blobs)
    with pytest.raises(ValueError):
        json.loads((dest / INDEX_NAME).read_bytes())


def test_reads_decrypt_only_the_segments_a_sample_spans(tmp_path: Path) -> None:
    files, dest = protected(tmp_path, n=200, shard_size=1 << 20, segment=4096)
    ds = ShardedDataset(str(dest), data_key=KEY, verify="record")
    assert len(ds.shards) == 1
    i = max(range(len(ds)), key=lambda j: int(ds._offset[j]))  # the last sample, deep in the shard
    assert ds.read(i) == files[ds.keys[i]]
    sealed, _ = ds._sealed[0]
    assert sealed.segments > 50
    decrypted: list[int] = []
    segment = sealed.segment

    def counting(index: int) -> bytes:
        last = ds._segment_cache.last
        if last is None or last[0] is not sealed or last[1] != index:
            decrypted.append(index)
        return segment(index)

    sealed.segment = counting  # type: ignore[method-assign]
    j = min(range(len(ds)), key=lambda k: int(ds._offset[k]))
    assert ds.read(j) == files[ds.keys[j]]
    span = int(ds._length[j]) + tfrecord.OVERHEAD
    assert 1 <= len(decrypted) <= -(-span // 4096) + 1
    # A batch in shard order decrypts each segment it touches once, then answers in the order asked.
    decrypted.clear()
    batch = sorted(range(len(ds)), key=lambda k: -int(ds._offset[k]))[:40]
    assert ds.read_many(batch) == [files[ds.keys[k]] for k in batch]
    assert len(decrypted) == len(set(decrypted))


def test_the_torch_datasets_read_encrypted_shards_in_worker_processes(tmp_path: Path) -> None:
    import torch.utils.data as tud

    from modelplane.data.torch_data import ShardIterableDataset, ShardMapDataset

    files, dest = protected(tmp_path, n=60)
    shards = ShardedDataset(str(dest), data_key=KEY)
    mapped = ShardMapDataset(shards, transform=lambda k, p: (k, p))
    loader: tud.DataLoader[tuple[str, bytes]] = tud.DataLoader(
        mapped, batch_size=8, num_workers=2, collate_fn=list
    )
    assert [item for batch in loader for item in batch] == [(k, files[k]) for k in shards.keys]

    it = ShardIterableDataset(shards, seed=3, rank=1, world_size=2, transform=lambda k, p: (k, p))
    got = list(tud.DataLoader(it, batch_size=None, num_workers=2))
    assert [k for k, _ in got] == [shards.keys[i] for i in it.rank_indices()]
    assert all(p == files[k] for k, p in got)


def test_a_pickled_reader_carries_its_released_key_to_a_fresh_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing as mp

    monkeypatch.delenv(sensitive.JOB_TOKEN_ENV, raising=False)
    files, dest = protected(tmp_path, n=30)
    ds = ShardedDataset(str(dest), data_key=KEY)
    ds.read(0)
    with mp.get_context("spawn").Pool(1) as pool:  # the child has no key and no job credential
        got = pool.apply(_read_all, (ds,))
    assert got == [files[k] for k in ds.keys]


def _read_all(ds: ShardedDataset) -> list[bytes]:
    return ds.read_many(range(len(ds)))


class _KeyRelease(BaseHTTPRequestHandler):
    """The control plane's key-release endpoint as a job sees it: one job token may read one dataset."""

    token = ""
    datasets: dict[str, DataKey] = {}
    asked: list[str] = []

    def do_POST(self) -> None:
        uri = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["uri"]
        self.asked.append(uri)
        ok = (
            self.path == "/api/v1/datasets/key-release"
            and self.headers["Authorization"] == f"Bearer {self.token}"
        )
        body = (
            self.datasets[uri].to_json()
            if ok
            else {
                "message": f"dataset {uri} is sensitive; job j is not confidential: set spec.tee",
                "hint": "set spec.tee",
            }
        )
        raw = json.dumps(body).encode()
        self.send_response(200 if ok else 403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def key_release(tmp_path: Path) -> Iterator[tuple[str, type[_KeyRelease]]]:
    handler = type("Handler", (_KeyRelease,), {"token": "mpj_confidential", "datasets": {}, "asked": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_in_a_job_the_key_comes_from_the_control_plane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_release: tuple[str, type[_KeyRelease]]
) -> None:
    url, handler = key_release
    files, dest = protected(tmp_path, n=40)
    handler.datasets[f"file://{dest}"] = KEY
    # What the job controller gives every task it launches; no key is passed to the reader.
    monkeypatch.setenv(sensitive.API_URL_ENV, url)
    monkeypatch.setenv(sensitive.JOB_TOKEN_ENV, "mpj_confidential")
    monkeypatch.setattr(sensitive, "_default_client", None)
    ds = ShardedDataset(str(dest))
    assert ds.read_many(range(len(ds))) == [files[k] for k in ds.keys]
    assert handler.asked == [f"file://{dest}"]  # once: the shards reuse the index's key

    monkeypatch.setattr(sensitive, "_default_client", None)
    monkeypatch.setenv(sensitive.JOB_TOKEN_ENV, "mpj_not_confidential")
    with pytest.raises(
        KeyReleaseDenied, match=f"packed dataset {dest} is sensitive.*not confidential"
    ) as err:
        ShardedDataset(str(dest))
    assert "spec.tee" in err.value.hint
    client = KeyReleaseClient(api_url=url, token="mpj_confidential")  # a provider works as well as a key
    assert ShardedDataset(str(dest), data_key=client).read(0) == files[ds.keys[0]]


def test_reading_without_a_key_is_refused_naming_the_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(sensitive.JOB_TOKEN_ENV, raising=False)
    monkeypatch.delenv(sensitive.API_URL_ENV, raising=False)
    monkeypatch.setattr(sensitive, "_default_client", None)
    _, dest = protected(tmp_path, n=10)
    with pytest.raises(
        KeyReleaseDenied, match=f"packed dataset {dest} is sensitive.*no job credential"
    ) as err:
        ShardedDataset(str(dest))
    assert "spec.datasets" in err.value.hint and "spec.tee" in err.value.hint


def test_a_wrong_key_is_a_clear_error(tmp_path: Path) -> None:
    _, dest = protected(tmp_path, n=10)
    other = DataKey.generate()
    with pytest.raises(SensitiveDataError, match=f"key given for sensitive dataset file://{dest}") as err:
        ShardedDataset(str(dest), data_key=other)
    assert err.value.field == "data_key" and KEY.key_id in err.value.message and "spec.tee" in err.value.hint
    forged = DataKey(KEY.key_id, os.urandom(32))  # the right id, not the right key
    with pytest.raises(SensitiveDataError, match=f"does not open the sensitive dataset file://{dest}"):
        ShardedDataset(str(dest), data_key=forged)


def test_tampered_ciphertext_is_detected_and_names_the_sample(tmp_path: Path) -> None:
    files, dest = protected(tmp_path, n=200, shard_size=1 << 20, segment=4096)
    ds = ShardedDataset(str(dest), data_key=KEY)
    shard = dest / ds.shards[0]["name"]
    header = sensitive.parse_header(shard.read_bytes(), "s")
    assert header is not None
    bad = max(range(len(ds)), key=lambda j: int(ds._offset[j]))  # last sample: its segment is not the first
    seg = int(ds._offset[bad]) // 4096
    raw = bytearray(shard.read_bytes())
    raw[header.size + seg * (4096 + sensitive.TAG) + 7] ^= 0x20
    shard.write_bytes(bytes(raw))
    for verify in (True, "shard", "record", False):
        ds = ShardedDataset(str(dest), data_key=KEY, verify=verify)
        with pytest.raises(
            SensitiveDataError, match=f"sample {ds.keys[bad]!r}.*segment {seg} fails authentication"
        ):
            ds.read(bad)
        good = [i for i in range(len(ds)) if int(ds._offset[i]) + int(ds._length[i]) + 16 <= seg * 4096]
        assert ds.read_many(good) == [files[ds.keys[i]] for i in good]  # other segments stay readable

    index = bytearray((dest / INDEX_NAME).read_bytes())
    index[-3] ^= 1
    (dest / INDEX_NAME).write_bytes(bytes(index))
    with pytest.raises(SensitiveDataError, match="index was altered"):
        ShardedDataset(str(dest), data_key=KEY)


def test_swapped_or_foreign_or_plaintext_shards_are_caught(tmp_path: Path) -> None:
    _, dest = protected(tmp_path / "a", n=120, shard_size=16 << 10)
    ds = ShardedDataset(str(dest), data_key=KEY)
    first, second = (dest / s["name"] for s in ds.shards[:2])
    a, b = first.read_bytes(), second.read_bytes()
    # Each shard is authentic on its own; the plaintext CRCs in the (authenticated) index tell them apart.
    first.write_bytes(b)
    second.write_bytes(a)
    swapped = ShardedDataset(str(dest), data_key=KEY, verify="shard")
    assert not swapped._sealed_ok(0, _sealed(swapped, 0))
    with pytest.raises(CorruptRecord):
        swapped.read_many([i for i in range(len(swapped)) if swapped._shard[i] == 0])
    first.write_bytes(a)
    second.write_bytes(b)

    # a shard of another sensitive dataset, even one that opens with this key
    _, other = protected(tmp_path / "b", n=20, shard_size=1 << 20)
    first.write_bytes((other / ShardedDataset(str(other), data_key=KEY).shards[0]["name"]).read_bytes())
    with pytest.raises(SensitiveDataError, match=f"not part of sensitive dataset file://{dest}"):
        ShardedDataset(str(dest), data_key=KEY).read(0)
    # a plaintext shard where an encrypted one should be
    first.write_bytes(tfrecord.encode_record(b"planted"))
    with pytest.raises(SensitiveDataError, match="is not encrypted"):
        ShardedDataset(str(dest), data_key=KEY).read(0)


def _sealed(ds: ShardedDataset, s: int) -> sensitive.SealedFile:
    ds._open_local(s)
    return ds._sealed[s][0]


def test_a_remote_encrypted_shard_set_reads_by_ranged_reads(tmp_path: Path) -> None:
    import uuid

    import fsspec

    files = make_tree(tmp_path / "src", n=80)
    url = f"memory://sealed-{uuid.uuid4().hex[:8]}/ds"
    pack(str(tmp_path / "src"), url, shard_size=32 << 10)
    assert sealing_segment(url) == SEALED_SEGMENT
    encrypt_dataset(url, KEY, segment=SEALED_SEGMENT)
    fs = fsspec.filesystem("memory")
    assert fs.cat_file(f"{url}/{INDEX_NAME}").startswith(sensitive.MAGIC)
    ds = ShardedDataset(url, data_key=KEY)
    assert not ds._local
    assert ds.read_many(range(len(ds))[::-1]) == [files[k] for k in ds.keys][::-1]
    with pytest.raises(DataError, match="verify='shard' needs local shards"):
        ShardedDataset(url, data_key=KEY, verify="shard")
    fs.rm(url.removeprefix("memory://").split("/")[0], recursive=True)


def test_protect_picks_small_segments_for_shard_sets_and_pack_will_not_overwrite_one(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", n=10)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.csv").write_text("x\n")
    pack(str(tmp_path / "src"), str(tmp_path / "ds"))
    assert sealing_segment(str(tmp_path / "ds")) == SEALED_SEGMENT
    assert sealing_segment(f"file://{tmp_path}") == SEALED_SEGMENT  # a folder holding a shard set
    assert sealing_segment(str(tmp_path / "plain")) == sensitive.SEGMENT
    encrypt_dataset(str(tmp_path / "ds"), KEY, segment=sealing_segment(str(tmp_path / "ds")))
    before = {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir()}
    with pytest.raises(DataError, match="holds a sensitive"):
        pack(str(tmp_path / "src"), str(tmp_path / "ds"))
    assert {p.name: p.read_bytes() for p in (tmp_path / "ds").iterdir()} == before
