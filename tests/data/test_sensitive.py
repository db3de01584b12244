"""Sensitive data at rest: the segmented AES-GCM file format, the key envelope, encrypting a dataset
in place without ever losing it, and the reader that training code uses."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.data import sensitive
from modelplane.data.errors import DataError
from modelplane.data.sensitive import (
    DataKey,
    Header,
    KeyReleaseClient,
    KeyReleaseDenied,
    SensitiveDataError,
    encrypt_dataset,
    encrypt_stream,
    load_or_create_master_key,
    normalize_uri,
    unwrap_key,
    wrap_key,
)

KEY = DataKey.generate()
URI = "file:///data/patients"


def sealed(plain: bytes, segment: int = 64, key: DataKey = KEY, uri: str = URI) -> bytes:
    buf = io.BytesIO()
    assert encrypt_stream(io.BytesIO(plain), buf, uri, key, segment) == len(plain)
    return buf.getvalue()


def opened(blob: bytes, key: DataKey = KEY) -> sensitive.DecryptingReader:
    raw = io.BytesIO(blob)
    header = Header.read(raw, "blob")
    assert header is not None
    return sensitive.DecryptingReader(raw, header, key, "blob")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=700), st.sampled_from([16, 64, 100]), st.data())
def test_any_plaintext_round_trips_and_reads_at_any_offset(plain: bytes, segment: int, data: st.DataObject) -> None:
    blob = sealed(plain, segment)
    assert plain not in blob or len(plain) < 8
    r = opened(blob)
    assert r.read() == plain
    for _ in range(5):
        start = data.draw(st.integers(0, len(plain) + 5))
        n = data.draw(st.integers(0, 300))
        r.seek(start)
        assert r.read(n) == plain[start:start + n]
    r.seek(-min(3, len(plain)), io.SEEK_END)
    assert r.read() == plain[len(plain) - min(3, len(plain)):]


@settings(max_examples=40, deadline=None)
@given(st.binary(min_size=1, max_size=400), st.data())
def test_any_changed_byte_is_detected(plain: bytes, data: st.DataObject) -> None:
    blob = bytearray(sealed(plain, 32))
    header_len = Header.read(io.BytesIO(bytes(blob)), "b").size  # type: ignore[union-attr]
    i = data.draw(st.integers(header_len, len(blob) - 1))
    blob[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(SensitiveDataError, match=r"authentication|truncated"):
        opened(bytes(blob)).read()


def test_truncation_reordering_and_relabelling_are_detected() -> None:
    plain = os.urandom(200)
    blob = sealed(plain, 64)  # 4 segments: 64, 64, 64, 8
    head = Header.read(io.BytesIO(blob), "b")
    assert head is not None
    body = blob[head.size:]
    seg = 64 + 16
    with pytest.raises(SensitiveDataError):  # the last segment dropped: the new last was not sealed as last
        opened(blob[:head.size + 3 * seg]).read()
    swapped = blob[:head.size] + body[seg:2 * seg] + body[:seg] + body[2 * seg:]
    with pytest.raises(SensitiveDataError, match="segment 0"):
        opened(swapped).read()
    other = sealed(plain, 64, uri="file:///data/public")  # same key, another dataset's header on this body
    other_head = Header.read(io.BytesIO(other), "b")
    assert other_head is not None
    with pytest.raises(SensitiveDataError):
        opened(other[:other_head.size] + body).read()
    with pytest.raises(SensitiveDataError, match="encrypted with key"):
        opened(blob, DataKey.generate())
    with pytest.raises(SensitiveDataError, match="truncated"):
        opened(blob[:head.size])


def test_empty_files_and_exact_segment_multiples_round_trip() -> None:
    for plain in (b"", b"x" * 64, b"y" * 128):
        assert opened(sealed(plain, 64)).read() == plain


def test_the_envelope_binds_the_key_to_its_dataset_and_master_key() -> None:
    master = os.urandom(32)
    wrapped = wrap_key(master, URI, KEY)
    assert KEY.key not in wrapped.encode()
    assert unwrap_key(master, URI, KEY.key_id, wrapped) == KEY
    for m, uri, kid in ((os.urandom(32), URI, KEY.key_id), (master, "file:///other", KEY.key_id),
                        (master, URI, DataKey.generate().key_id)):
        with pytest.raises(SensitiveDataError, match="master key"):
            unwrap_key(m, uri, kid, wrapped)


def test_the_master_key_is_created_once_private(tmp_path: Path) -> None:
    key = load_or_create_master_key(tmp_path)
    path = tmp_path / "keys" / "datasets.kek"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(key) == 32
    assert load_or_create_master_key(tmp_path) == key
    path.write_text("not hex")
    with pytest.raises(SensitiveDataError, match="cannot read"):
        load_or_create_master_key(tmp_path)


def test_data_keys_from_json_are_checked() -> None:
    assert DataKey.from_json(KEY.to_json()) == KEY
    for bad in ({"keyId": KEY.key_id}, {"keyId": "zz", "dataKey": "AA=="},
                {"keyId": KEY.key_id, "dataKey": "AAAA"}):
        with pytest.raises(DataError, match="data key"):
            DataKey.from_json(bad)


@pytest.mark.parametrize(("given_uri", "expected"), [
    ("/data/x/", "file:///data/x"), ("file:///data/x", "file:///data/x"), ("s3://b/p/", "s3://b/p"),
    ("/", "file:///"),
])
def test_uris_are_normalized(given_uri: str, expected: str) -> None:
    assert normalize_uri(given_uri) == expected


@pytest.mark.parametrize("bad", ["data/x", "", "s3://b/a b", "file://relative/x"])
def test_relative_or_odd_uris_are_refused_with_a_fix(bad: str) -> None:
    with pytest.raises(DataError) as err:
        normalize_uri(bad)
    assert err.value.field == "uri" and err.value.hint


def _tree(root: Path) -> dict[str, bytes]:
    files = {"train.csv": b"id,label\n" + b"1,0\n" * 500, "shards/shard-0.tfrecord": os.urandom(3000),
             "shards/index.json": b'{"samples": 3}', "empty": b""}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_a_dataset_is_encrypted_in_place_and_read_back(tmp_path: Path) -> None:
    files = _tree(tmp_path)
    registered: list[str] = []
    report = encrypt_dataset(str(tmp_path), KEY, register=lambda: registered.append("put"), segment=256)
    assert registered == ["put"] and report.encrypted == len(files) and report.already == 0
    assert report.bytes == sum(len(v) for v in files.values())
    assert not list(tmp_path.rglob("*.mpsd-tmp"))
    for rel, data in files.items():
        assert sensitive.is_encrypted(tmp_path / rel)
        assert data[:16] not in (tmp_path / rel).read_bytes() or not data
        assert sensitive.read_bytes(tmp_path / rel, keys=lambda uri: KEY) == data
    with sensitive.open(tmp_path / "train.csv", "r", keys=lambda uri: KEY) as f:
        assert f.readline() == "id,label\n"
    again = encrypt_dataset(str(tmp_path), KEY)
    assert again.encrypted == 0 and again.already == len(files)
    with pytest.raises(SensitiveDataError, match="another key"):
        encrypt_dataset(str(tmp_path), DataKey.generate())


def test_a_failed_registration_leaves_the_plaintext_untouched(tmp_path: Path) -> None:
    files = _tree(tmp_path)

    def refuse() -> None:
        raise KeyReleaseDenied("no")

    with pytest.raises(KeyReleaseDenied):
        encrypt_dataset(str(tmp_path), KEY, register=refuse)
    assert {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_the_keys_a_reader_is_given_are_the_ones_asked_for(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"secret")
    encrypt_dataset(str(tmp_path / "f"), KEY)
    asked: list[str] = []

    def keys(uri: str) -> DataKey:
        asked.append(uri)
        return KEY

    assert sensitive.read_bytes(tmp_path / "f", keys=keys) == b"secret"
    assert asked == [f"file://{tmp_path / 'f'}"]
    (tmp_path / "plain").write_bytes(b"public")
    assert sensitive.read_bytes(tmp_path / "plain", keys=lambda uri: pytest.fail("asked")) == b"public"
    with pytest.raises(DataError, match="only reads"):
        sensitive.open(tmp_path / "plain", "wb")


def test_outside_a_job_the_reader_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPLANE_JOB_TOKEN", raising=False)
    (tmp_path / "f").write_bytes(b"secret")
    encrypt_dataset(str(tmp_path / "f"), KEY)
    with pytest.raises(KeyReleaseDenied, match="no job credential") as err:
        sensitive.read_bytes(tmp_path / "f", keys=KeyReleaseClient(api_url="http://127.0.0.1:9"))
    assert "spec.tee" in err.value.hint
    with pytest.raises(SensitiveDataError, match="cannot reach"):
        sensitive.read_bytes(tmp_path / "f", keys=KeyReleaseClient(api_url="http://127.0.0.1:9", token="mpj_x",
                                                                   timeout=2))
