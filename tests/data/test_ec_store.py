"""The erasure-coded store: round trips, reconstruction from any k, repair, atomic commit."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import fsspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import modelplane.data
from modelplane.data import ecstore
from modelplane.data.ecstore import ErasureCodedStore
from modelplane.data.erasure import Codec, ErasureProfile, available_ec_types
from modelplane.data.errors import DataError, ObjectNotFound, Unrecoverable

SMALL = ErasureProfile(k=4, m=2, stripe_size=64 << 10)


def test_isa_l_cauchy_backend_is_available() -> None:
    assert "isa_l_rs_cauchy" in available_ec_types()


def test_round_trip_and_ranges(tmp_path: Path) -> None:
    store = ErasureCodedStore.at_root(tmp_path, SMALL)
    data = os.urandom(300_001)
    store.put("a/b", data)
    assert store.get("a/b") == data
    assert store.get("a/b", 65_530, 131_080) == data[65_530:131_080]
    assert store.get("a/b", 299_990) == data[299_990:]
    assert store.get("a/b", -5) == data[-5:]
    store.put("empty", b"")
    assert store.get("empty") == b""


@pytest.mark.parametrize("lost", [(0, 1), (4, 5), (1, 5), (0, 3)])
def test_any_two_lost_fragments_of_4_plus_2_are_rebuilt_and_repaired(tmp_path: Path, lost: tuple[int, int]) -> None:
    store = ErasureCodedStore.at_root(tmp_path, SMALL)
    data = os.urandom(200_000)
    version = store.put("obj", data).version
    for d in lost:
        store._frag_path(d, version).unlink()
    data_back, report = store.get_with_report("obj")
    assert data_back == data
    # Reads touch parity only when data fragments are missing; a scrub (check/repair) sees all.
    assert report.damaged == {d for d in lost if d < 4}
    # Repair on read rebuilds every damaged fragment of the object, parity included.
    assert store.check("obj").damaged == (set() if report.repaired else set(lost))
    store.repair("obj")
    assert store.check("obj").damaged == set()
    for d in lost:
        assert store._frag_path(d, version).exists()


def test_corrupt_fragment_is_detected_by_checksum_and_repaired(tmp_path: Path) -> None:
    store = ErasureCodedStore.at_root(tmp_path, SMALL)
    data = os.urandom(150_000)
    version = store.put("obj", data).version
    path = store._frag_path(0, version)
    raw = bytearray(path.read_bytes())
    raw[1000] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert store.check("obj").damaged == {0}
    assert store.get("obj") == data
    assert store.check("obj").damaged == set()


def test_three_lost_fragments_of_4_plus_2_is_unrecoverable(tmp_path: Path) -> None:
    store = ErasureCodedStore.at_root(tmp_path, SMALL)
    version = store.put("obj", os.urandom(10_000)).version
    for d in (0, 2, 5):
        store._frag_path(d, version).unlink()
    with pytest.raises(Unrecoverable, match="4 are needed"):
        store.get("obj")


def test_lost_disk_with_manifests_is_refilled(tmp_path: Path) -> None:
    import shutil

    store = ErasureCodedStore.at_root(tmp_path, SMALL)
    data = os.urandom(70_000)
    store.put("x/y", data)
    shutil.rmtree(tmp_path / "disk2")
    store = ErasureCodedStore.at_root(tmp_path, SMALL)  # replaced, empty disk
    assert store.get("x/y") == data
    assert (tmp_path / "disk2" / "meta" / "x" / "y.~mf").exists()
    assert store.check("x/y").damaged == set()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(0, 40_000),
    k=st.integers(2, 6),
    m=st.integers(1, 3),
    lost=st.sets(st.integers(0, 8), max_size=3),
)
def test_any_k_fragments_rebuild_the_object(tmp_path_factory: pytest.TempPathFactory, size: int, k: int, m: int,
                                            lost: set[int]) -> None:
    root = tmp_path_factory.mktemp("ec")
    store = ErasureCodedStore.at_root(root, ErasureProfile(k=k, m=m, stripe_size=8192), durable=False)
    data = os.urandom(size)
    version = store.put("o", data).version
    lost = {d for d in lost if d < k + m}
    for d in lost:
        store._frag_path(d, version).unlink(missing_ok=True)
    if len(lost) <= m or size == 0:  # an empty object has no stripes to lose
        assert store.get("o") == data
    else:
        with pytest.raises(Unrecoverable):
            store.get("o")


def test_overwrite_replaces_whole_object_and_frees_old_fragments(tmp_path: Path) -> None:
    store = ErasureCodedStore.at_root(tmp_path, SMALL)
    old = store.put("k", b"old" * 1000).version
    store.put("k", b"new")
    assert store.get("k") == b"new"
    assert not store._frag_path(0, old).exists()


def test_aborted_writer_leaves_previous_version_visible(tmp_path: Path) -> None:
    store = ErasureCodedStore.at_root(tmp_path, SMALL)
    store.put("k", b"v1")
    w = store.writer("k")
    w.write(os.urandom(200_000))
    w.abort()
    assert store.get("k") == b"v1"
    with pytest.raises(ObjectNotFound):
        store.get("never-written")


def test_writer_killed_mid_object_leaves_nothing_visible(tmp_path: Path) -> None:
    """A real SIGKILL while a large object streams in: no manifest, so no object."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from modelplane.data.ecstore import ErasureCodedStore
        from modelplane.data.erasure import ErasureProfile
        store = ErasureCodedStore.at_root({str(tmp_path)!r}, ErasureProfile(stripe_size=65536))
        store.put("victim", b"previous")
        w = store.writer("victim")
        w.write(os.urandom(1 << 20))
        print("halfway", flush=True)
        sys.stdin.read()  # wait here until killed
        w.commit()
        """
    )
    env = dict(os.environ, PYTHONPATH=str(Path(modelplane.data.__file__).parents[2]))
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"halfway"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = ErasureCodedStore.at_root(tmp_path, ErasureProfile(stripe_size=65536))
    assert store.get("victim") == b"previous"
    assert store.collect_garbage(older_than_s=0) == 6  # the orphaned fragments of the dead write


def test_mismatched_profile_and_disk_order_are_refused(tmp_path: Path) -> None:
    disks = [tmp_path / f"d{i}" for i in range(6)]
    ErasureCodedStore(disks, SMALL).put("a", b"1")
    with pytest.raises(DataError, match="listed at position"):
        ErasureCodedStore([disks[1], disks[0], *disks[2:]], SMALL)
    with pytest.raises(DataError, match="needs exactly 5"):
        ErasureCodedStore(disks, ErasureProfile(k=3, m=2))
    with pytest.raises(DataError, match="invalid component"):
        ErasureCodedStore(disks, SMALL).put("a/../b", b"")


def test_fsspec_filesystem(tmp_path: Path) -> None:
    fs = fsspec.filesystem("ec", root=str(tmp_path), stripe_size=65536, skip_instance_cache=True)
    data = os.urandom(250_000)
    with fs.open("ds/part-0", "wb") as f:
        for i in range(0, len(data), 10_000):
            f.write(data[i : i + 10_000])
    fs.pipe("ds/sub/part-1", b"hello")
    assert fs.cat("ds/part-0") == data
    assert fs.find("ds") == ["ds/part-0", "ds/sub/part-1"]
    assert fs.info("ds")["type"] == "directory"
    info = fs.info("ds/part-0")
    assert info["size"] == len(data) and info["ETag"]
    with fs.open("ds/part-0", "rb") as f:
        f.seek(70_000)
        assert f.read(5_000) == data[70_000:75_000]
    with fsspec.open("ec://ds/sub/part-1", ec={"root": str(tmp_path), "stripe_size": 65536}) as f:
        assert f.read() == b"hello"
    with pytest.raises(RuntimeError), fs.open("ds/failed", "wb") as f:
        f.write(b"partial")
        raise RuntimeError("writer failed")
    assert not fs.exists("ds/failed")
    fs.rm("ds", recursive=True)
    assert fs.find("") == []
    with pytest.raises(FileNotFoundError):
        fs.cat("ds/part-0")


def test_scrub_finds_and_repairs_lost_parity(tmp_path: Path) -> None:
    store = ErasureCodedStore.at_root(tmp_path, SMALL)
    v1 = store.put("a/one", os.urandom(90_000)).version
    store.put("b/two", os.urandom(10))
    store._frag_path(5, v1).unlink()  # parity: plain reads never notice
    assert store.get("a/one") and store.check("a/one").damaged == {5}
    found = store.scrub()
    assert set(found) == {"a/one"} and found["a/one"].repaired
    assert store.scrub(repair=False) == {}


def test_read_into_a_caller_buffer_with_lost_fragments(tmp_path: Path) -> None:
    store = ErasureCodedStore.at_root(tmp_path, SMALL)
    data = os.urandom(200_003)
    version = store.put("o", data).version
    store._frag_path(1, version).unlink()
    buf = bytearray(len(data))
    assert store.read_into("o", buf) == len(data) and buf == data
    small = bytearray(70_000)
    assert store.read_into("o", small, start=60_000) == 70_000 and small == data[60_000:130_000]
    assert store.read_into("o", bytearray(10), start=len(data)) == 0


# ---- fast paths: batched fragment I/O, in-place reads, decode only where needed ---------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    size=st.integers(1, 120_000),
    k=st.integers(2, 8),
    m=st.integers(1, 3),
    window=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    damage=st.dictionaries(st.integers(0, 10), st.sampled_from(["lose", "flip-header", "flip-payload", "truncate"]),
                           max_size=3),
)
def test_any_range_with_any_damage_reads_back_exactly(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, size: int, k: int, m: int,
    window: tuple[float, float], damage: dict[int, str],
) -> None:
    """Ranges cut stripes and fragments anywhere; every kind of damage to up to m fragment files is
    caught by the CRC (header bytes included) and rebuilt; more than m is refused, never wrong."""
    monkeypatch.setattr(ecstore, "BATCH_BYTES", 3 * 4096)  # several batches in flight per read
    monkeypatch.setattr(ecstore, "_INLINE_BYTES", 0 if size % 2 else 1 << 30)  # pool threads, or inline
    root = tmp_path_factory.mktemp("ec")
    store = ErasureCodedStore.at_root(root, ErasureProfile(k=k, m=m, stripe_size=4096), durable=False,
                                      repair_on_read=False)
    data = os.urandom(size)
    manifest = store.put("o", data)
    damage = {d: how for d, how in damage.items() if d < k + m}
    for d, how in damage.items():
        path = store._frag_path(d, manifest.version)
        raw = bytearray(path.read_bytes())
        if how == "lose":
            path.unlink()
        elif how == "truncate":
            path.write_bytes(raw[: len(raw) // 2])
        else:
            at = 3 if how == "flip-header" else 80 + (len(raw) - 80) // 2
            raw[at] ^= 0x01
            path.write_bytes(bytes(raw))
    lo, hi = sorted(int(f * size) for f in window)
    if len(damage) > m:
        # Wrong bytes are never returned: either enough intact fragments remain for this range, or
        # the read is refused.
        with contextlib.suppress(Unrecoverable):
            assert store.get("o", lo, hi) == data[lo:hi]
        return
    got, report = store.get_with_report("o", lo, hi)
    assert type(got) is bytes and got == data[lo:hi]
    assert store.get("o") == data
    assert report.damaged <= set(damage)
    assert store.check("o").damaged == set(damage)
    store.repair("o")
    assert store.check("o").damaged == set() and store.get("o") == data


def test_big_streaming_write_in_odd_chunks_of_any_buffer_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ecstore, "BATCH_BYTES", 128 << 10)
    store = ErasureCodedStore.at_root(tmp_path, SMALL)
    data = os.urandom(3_000_017)
    w = store.writer("big")
    kinds = [bytes, bytearray, memoryview]
    for i, off in enumerate(range(0, len(data), 77_777)):
        w.write(kinds[i % 3](data[off : off + 77_777]))
    manifest = w.commit()
    assert manifest.size == len(data) and manifest.stripes == -(-len(data) // SMALL.stripe_size)
    assert store.get("big") == data
    assert store.check("big").damaged == set()
    buf = bytearray(len(data))
    assert store.read_into("big", memoryview(buf)) == len(data) and buf == data


def test_large_get_returns_bytes_built_in_place(tmp_path: Path) -> None:
    """Objects of 32 MiB and more take the huge-page path; the result is an ordinary, hashable bytes."""
    store = ErasureCodedStore.at_root(tmp_path, ErasureProfile(), durable=False)
    data = os.urandom(33 << 20)
    store.put("o", data)
    got = store.get("o")
    assert type(got) is bytes and got == data and hash(got) == hash(data)
    assert store.get("o", 5, 9) == data[5:9]


def test_reads_fall_back_to_pyeclib_when_fragment_layout_is_unknown(tmp_path: Path) -> None:
    store = ErasureCodedStore.at_root(tmp_path, SMALL, repair_on_read=False)
    data = os.urandom(300_001)
    version = store.put("o", data).version
    store.codec.header_size = None  # as if liberasurecode laid fragments out differently
    assert store.get("o") == data and store.get("o", 70_000, 70_010) == data[70_000:70_010]
    store._frag_path(2, version).unlink()
    data_back, report = store.get_with_report("o")
    assert data_back == data and report.damaged == {2}


def test_codec_knows_the_data_fragment_layout() -> None:
    codec = Codec(ErasureProfile(k=4, m=2))
    assert codec.header_size == 80
    stripe = os.urandom(10_001)
    frags = codec.encode(stripe)
    payload = len(frags[0]) - 80
    assert b"".join(f[80:] for f in frags[:4])[: len(stripe)] == stripe
    assert codec.header_matches(frags[1][:80], 1, payload, len(stripe))
    assert not codec.header_matches(frags[1][:80], 2, payload, len(stripe))


def test_read_into_refuses_a_read_only_buffer(tmp_path: Path) -> None:
    store = ErasureCodedStore.at_root(tmp_path, SMALL)
    store.put("o", b"abc")
    with pytest.raises(DataError, match="writable buffer"):
        store.read_into("o", b"xyz")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_failed_and_aborted_writers_leave_no_descriptors_or_fragments(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ecstore, "BATCH_BYTES", 64 << 10)
    store = ErasureCodedStore.at_root(tmp_path, SMALL)
    store.put("a", b"x")
    before = _open_fds()
    w = store.writer("b")
    w.write(os.urandom(1 << 20))  # batches are being written by the pool right now
    w.abort()
    real, calls = ecstore._write_batch, []

    def disk_fills_up(fd: int, bufs: list[list[bytes]], offset: int, crcs: list[int]) -> list[int]:
        calls.append(fd)
        if len(calls) > 9:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, bufs, offset, crcs)

    monkeypatch.setattr(ecstore, "_write_batch", disk_fills_up)
    with pytest.raises(OSError, match="No space left"):
        store.put("a", os.urandom(1 << 20))
    assert _open_fds() == before
    assert store.collect_garbage(older_than_s=0) == 0
    assert store.get("a") == b"x"


def test_writer_killed_at_random_moments_of_large_overwrites_shows_one_whole_version(tmp_path: Path) -> None:
    """SIGKILL while batches of a multi-MiB object are in flight on the I/O threads, repeatedly: a
    reader always sees one complete version, never a mix or a torn object."""
    import random
    import time

    script = textwrap.dedent(
        f"""
        import random, sys
        from modelplane.data import ecstore
        from modelplane.data.ecstore import ErasureCodedStore
        from modelplane.data.erasure import ErasureProfile
        ecstore.BATCH_BYTES = 256 << 10
        store = ErasureCodedStore.at_root({str(tmp_path)!r}, ErasureProfile(stripe_size=65536), durable=False)
        i = 0
        while True:
            store.put("victim", random.Random(i).randbytes(3 << 20))
            print(i, flush=True)
            i += 1
        """
    )
    env = dict(os.environ, PYTHONPATH=str(Path(modelplane.data.__file__).parents[2]))
    rng = random.Random(7)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one version committed
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = ErasureCodedStore.at_root(tmp_path, ErasureProfile(stripe_size=65536))
        got = store.get("victim")
        assert any(got == random.Random(i).randbytes(3 << 20) for i in range(200))
        assert store.check("victim").damaged == set()


@pytest.mark.parametrize("k,m", [(4, 2), (8, 3)])
def test_direct_isa_l_encoding_writes_exactly_the_fragments_pyeclib_would(tmp_path: Path, k: int, m: int) -> None:
    """Full stripes skip pyeclib on the write path; the files must still be what pyeclib writes,
    so that pyeclib can decode them and older objects stay readable."""
    profile = ErasureProfile(k=k, m=m, stripe_size=64 << 10)
    store = ErasureCodedStore.at_root(tmp_path, profile)
    assert store.codec.direct is not None
    data = os.urandom(5 * profile.stripe_size + 12_345)
    versions = [store.put("from-bytes", data).version]
    w = store.writer("from-bytearray")
    w.write(memoryview(bytearray(data)))
    versions.append(w.commit().version)
    expected = [store.codec._driver.encode(data[o : o + profile.stripe_size])
                for o in range(0, len(data), profile.stripe_size)]
    for version in versions:
        for d in range(profile.n):
            assert store._frag_path(d, version).read_bytes() == b"".join(frags[d] for frags in expected)
