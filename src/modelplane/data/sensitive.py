"""Sensitive datasets: encrypted at rest, readable only after the control plane releases their key.

Secure key release, the way Confidential Containers' Key Broker Service and Azure's Secure Key
Release do it: the data owner encrypts a dataset with a fresh data key (DEK) and hands the key to
the platform, which keeps it only wrapped ("envelope encryption") by a platform master key that
never leaves the API process. A job reading the data asks the control plane for the DEK with its
own per-launch credential; the control plane answers only if the job is confidential (``spec.tee``)
and every node it runs on holds a fresh, successful TEE attestation (``privacy.tee``).

File format (one per data file; shards, index files and plain files alike), the STREAM
construction of Hoang, Reyhanitabar, Rogaway and Vizár (as in Tink's streaming AEAD), so files of any
size are read in bounded memory and with random access (shard offsets keep working):

    header  = b"MPSD" | version u8 | segment size u32 | key id (16) | salt (16) | uri length u16 | uri
    segment = AES-256-GCM(file key, nonce = index u88 | last-flag u8, plaintext, aad = header)

The file key is HKDF-SHA256(DEK, salt) so nonces never repeat across files; the last-segment flag
in the nonce stops truncation, the index stops reordering, the header as AAD stops a file from being
passed off as another dataset's. The header names the dataset, so ``open(path)`` needs nothing else.
"""

from __future__ import annotations

import base64
import io
import mmap
import os
import secrets
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelplane.core.errors import Forbidden
from modelplane.data.errors import DataError

MAGIC = b"MPSD"
VERSION = 1
SEGMENT = 1 << 20
"""Plaintext bytes per segment: 1 MiB keeps memory bounded and the 16-byte tags ~0.002% overhead."""
TAG = 16
KEY_BYTES = 32
KEY_ID_BYTES = 16
SALT_BYTES = 16
_FIXED = struct.Struct(">4sBI16s16sH")
API_URL_ENV = "MODELPLANE_API_URL"
JOB_TOKEN_ENV = "MODELPLANE_JOB_TOKEN"
JOB_TOKEN_PREFIX = "mpj_"
MASTER_KEY_FILE = "datasets.kek"


class SensitiveDataError(DataError):
    """Encrypted data that cannot be read: a wrong key, a damaged or truncated file, a bad URI."""


class KeyReleaseDenied(Forbidden):
    """The control plane refused to release a dataset's key (the message says why)."""


# --------------------------------------------------------------------------- URIs
def normalize_uri(uri: str) -> str:
    """The catalog's name for a dataset: a URL as written, an absolute local path as ``file://``.

    Pure (no file system look-up), so the API, the CLI and a job's ``spec.datasets`` agree without
    sharing a working directory; a relative path is refused because it would mean different data
    on each machine."""
    text = uri.strip()
    if not text or any(c.isspace() for c in text) or len(text) > 1024:
        raise DataError(f"dataset URI {uri!r} is not usable", field="uri",
                        hint="give an absolute path or a URL such as s3://bucket/prefix (no spaces, at most 1024 "
                             "characters)")
    if text.startswith("/"):
        text = "file://" + text
    if "://" not in text:
        raise DataError(f"dataset URI {uri!r} is relative", field="uri",
                        hint="give an absolute path (/data/x) or a URL (s3://bucket/x, file:///data/x)")
    scheme, _, rest = text.partition("://")
    rest = rest.rstrip("/") or "/"
    if scheme == "file" and not rest.startswith("/"):
        raise DataError(f"dataset URI {uri!r} is not an absolute file URL", field="uri",
                        hint="write file:///absolute/path (three slashes)")
    return f"{scheme}://{rest}"


def local_path(uri: str) -> Path | None:
    """The local path of a ``file://`` URI, else None (an fsspec URL)."""
    return Path(uri[len("file://"):]) if uri.startswith("file://") else None


# --------------------------------------------------------------------------- keys and envelopes
@dataclass(frozen=True)
class DataKey:
    """A dataset's data key and its id (the id is public: it is written in every file header)."""

    key_id: str
    key: bytes

    @classmethod
    def generate(cls) -> DataKey:
        return cls(secrets.token_hex(KEY_ID_BYTES), AESGCM.generate_key(bit_length=256))

    def to_json(self) -> dict[str, str]:
        return {"keyId": self.key_id, "dataKey": base64.b64encode(self.key).decode()}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> DataKey:
        try:
            key = base64.b64decode(str(body["dataKey"]), validate=True)
            key_id = str(body["keyId"])
            bytes.fromhex(key_id)
        except (KeyError, ValueError) as exc:
            raise DataError(f"not a data key: {exc}", field="dataKey",
                            hint="send keyId (32 hex digits) and dataKey (base64 of 32 bytes)") from None
        if len(key) != KEY_BYTES or len(key_id) != 2 * KEY_ID_BYTES:
            raise DataError(f"a data key is {KEY_BYTES} bytes with a {2 * KEY_ID_BYTES}-digit id; got {len(key)} "
                            f"bytes and {len(key_id)} digits", field="dataKey", hint="use DataKey.generate()")
        return cls(key_id, key)


def _envelope_aad(uri: str, key_id: str) -> bytes:
    return f"modelplane-dek/v1\x00{uri}\x00{key_id}".encode()


def wrap_key(master_key: bytes, uri: str, data_key: DataKey) -> str:
    """Envelope-encrypt a data key under the master key, bound to its dataset and id (base64)."""
    nonce = os.urandom(12)
    sealed = AESGCM(master_key).encrypt(nonce, data_key.key, _envelope_aad(uri, data_key.key_id))
    return base64.b64encode(nonce + sealed).decode()


def unwrap_key(master_key: bytes, uri: str, key_id: str, wrapped: str) -> DataKey:
    """The data key of ``uri``; a master key, URI or id that does not match is an error, never a key."""
    raw = base64.b64decode(wrapped)
    try:
        key = AESGCM(master_key).decrypt(raw[:12], raw[12:], _envelope_aad(uri, key_id))
    except InvalidTag:
        raise SensitiveDataError(f"the stored key of dataset {uri} does not open with this master key",
                                 hint="the platform's keys/datasets.kek was replaced; restore it from backup") from None
    return DataKey(key_id, key)


def load_or_create_master_key(home: Path) -> bytes:
    """The platform master key in ``<home>/keys/datasets.kek`` (mode 0600), created on first use.

    Like the token and audit signing keys it is never in the database: a database reader sees
    only wrapped data keys."""
    path = home / "keys" / MASTER_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "w") as f:
                f.write(AESGCM.generate_key(bit_length=256).hex())
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError) as exc:
        raise SensitiveDataError(f"cannot read the dataset master key {path}: {exc}",
                                 hint="restore it from backup; never edit it by hand") from None
    if len(key) != KEY_BYTES:
        raise SensitiveDataError(f"{path} does not hold a 256-bit key", hint="restore it from backup")
    return key


# --------------------------------------------------------------------------- file format
@dataclass(frozen=True)
class Header:
    key_id: str
    salt: bytes
    uri: str
    segment: int = SEGMENT

    def encode(self) -> bytes:
        uri = self.uri.encode()
        return _FIXED.pack(MAGIC, VERSION, self.segment, bytes.fromhex(self.key_id), self.salt, len(uri)) + uri

    @classmethod
    def read(cls, f: IO[bytes], where: str) -> Header | None:
        """The header at the start of ``f``, or None if ``f`` is not an encrypted file."""
        fixed = f.read(_FIXED.size)
        if len(fixed) < _FIXED.size or not fixed.startswith(MAGIC):
            return None
        _, version, segment, key_id, salt, n = _FIXED.unpack(fixed)
        if version != VERSION or not 0 < segment <= 1 << 26:
            raise SensitiveDataError(f"{where}: unknown encrypted-file version {version} or segment size {segment}",
                                     hint="read it with the modelplane version that wrote it")
        uri = f.read(n)
        if len(uri) != n:
            raise SensitiveDataError(f"{where}: the encrypted file's header is truncated", hint="restore the file")
        return cls(key_id.hex(), salt, uri.decode(), segment)

    @property
    def size(self) -> int:
        return _FIXED.size + len(self.uri.encode())


def _file_cipher(key: DataKey, header: Header) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=header.salt,
                info=b"modelplane-sensitive-file/v1" + bytes.fromhex(key.key_id))
    return AESGCM(hkdf.derive(key.key))


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def encrypt_stream(src: IO[bytes], dst: IO[bytes], uri: str, key: DataKey, segment: int = SEGMENT) -> int:
    """Encrypt all of ``src`` into ``dst`` for dataset ``uri``; returns the plaintext bytes written."""
    header = Header(key.key_id, os.urandom(SALT_BYTES), uri, segment)
    head = header.encode()
    aead = _file_cipher(key, header)
    dst.write(head)
    total, index = 0, 0
    chunk = src.read(segment)
    while True:
        following = src.read(segment) if chunk else b""
        last = not following
        dst.write(aead.encrypt(_nonce(index, last), chunk, head))
        total += len(chunk)
        if last:
            return total
        chunk, index = following, index + 1


class SegmentCache:
    """The last segment decrypted, shared by every file of one reader, so that memory stays at one
    segment however many shards are open (consecutive samples mostly share a segment)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: tuple[SealedFile, int, bytes] | None = None


class SealedFile:
    """Random access to an encrypted file's plaintext through positional reads of its ciphertext.

    No file position is shared, so a shard reader can serve samples by offset from a memory map or a
    ranged reader; each read decrypts only the segments it spans, and the last one decrypted is kept
    in ``cache`` (one per reader of many files; by default this file's own)."""

    def __init__(self, read_at: Callable[[int, int], bytes], size: int, header: Header, key: DataKey,
                 name: str, cache: SegmentCache | None = None) -> None:
        if key.key_id != header.key_id:
            raise SensitiveDataError(f"{name} was encrypted with key {header.key_id}, not {key.key_id}",
                                     hint="the dataset was protected again with a new key; encrypt it anew")
        self._read_at, self.header, self.name = read_at, header, name
        self._head = header.encode()
        self._aead = _file_cipher(key, header)
        body = size - header.size
        seg = header.segment + TAG
        self.segments = max(1, -(-body // seg))
        self.size = body - TAG * self.segments
        """Plaintext bytes."""
        if self.size < 0 or (body - (self.segments - 1) * seg) < TAG:
            raise SensitiveDataError(f"{name} is truncated", hint="restore the file from its source")
        self._cache = cache or SegmentCache()

    def segment(self, index: int) -> bytes:
        """Plaintext of segment ``index``, authenticated (the last one decrypted is served from memory)."""
        last = self._cache.last  # one read of the slot: another thread may replace it meanwhile
        if last is not None and last[0] is self and last[1] == index:
            return last[2]
        seg = self.header.segment + TAG
        sealed = self._read_at(self.header.size + index * seg, seg)
        try:
            plain = self._aead.decrypt(_nonce(index, index == self.segments - 1), sealed, self._head)
        except InvalidTag:
            raise SensitiveDataError(f"{self.name}: segment {index} fails authentication (damaged, truncated or "
                                     "tampered with)", hint="restore the file from its source") from None
        self._cache.last = (self, index, plain)
        return plain

    def pread(self, offset: int, n: int) -> bytes:
        """Plaintext bytes ``[offset, offset + n)`` (fewer past the end)."""
        end = min(offset + n, self.size)
        if offset < 0 or end <= offset:
            return b""
        seg = self.header.segment
        first, start = divmod(offset, seg)
        last = (end - 1) // seg
        if first == last:
            return self.segment(first)[start:start + end - offset]
        parts = [self.segment(first)[start:]]
        parts += [self.segment(k) for k in range(first + 1, last)]
        parts.append(self.segment(last)[:end - last * seg])
        return b"".join(parts)


class DecryptingReader(io.RawIOBase):
    """A seekable, read-only view of an encrypted file's plaintext (one segment decrypted at a time)."""

    def __init__(self, raw: IO[bytes], header: Header, key: DataKey, name: str) -> None:
        super().__init__()
        self._raw, self.name = raw, name
        raw.seek(0, io.SEEK_END)
        self._file = SealedFile(self._read_at, raw.tell(), header, key, name)
        self._segment_size = header.segment
        self._size = self._file.size
        self._pos = 0

    def _read_at(self, offset: int, n: int) -> bytes:
        self._raw.seek(offset)
        return self._raw.read(n)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` across segments (no short reads before the end of the file)."""
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            index, start = divmod(self._pos, self._segment_size)
            plain = self._file.segment(index)[start:start + len(view) - done]
            view[done:done + len(plain)] = plain
            self._pos += len(plain)
            done += len(plain)
        return done

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


# --------------------------------------------------------------------------- key release (job side)
KeyProvider = Callable[[str], DataKey]


class KeyReleaseClient:
    """Fetches data keys from the control plane with this job's credential; keys are cached per process.

    Reads ``$MODELPLANE_API_URL`` and ``$MODELPLANE_JOB_TOKEN``, which the job controller sets for
    every task it launches."""

    def __init__(self, api_url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.api_url = (api_url or os.environ.get(API_URL_ENV, "")).rstrip("/")
        self.token = token or os.environ.get(JOB_TOKEN_ENV, "")
        self.timeout = timeout
        self._keys: dict[str, DataKey] = {}
        self._lock = threading.Lock()

    def __call__(self, uri: str) -> DataKey:
        with self._lock:
            found = self._keys.get(uri)
            if found is not None:
                return found
            if not self.api_url or not self.token:
                raise KeyReleaseDenied(f"dataset {uri} is encrypted and this process has no job credential",
                                       hint=f"read it from a job the platform launched (it sets {API_URL_ENV} and "
                                            f"{JOB_TOKEN_ENV}), declared in spec.datasets, with spec.tee set")
            import httpx

            try:
                r = httpx.post(f"{self.api_url}/api/v1/datasets/key-release", json={"uri": uri},
                               headers={"Authorization": f"Bearer {self.token}"}, timeout=self.timeout)
            except httpx.HTTPError as exc:
                raise SensitiveDataError(f"cannot reach the control plane at {self.api_url} for the key of {uri}: "
                                         f"{exc}", hint="check the API is up and reachable from the node") from None
            try:
                body = r.json()
            except ValueError:
                body = {"message": r.text[:200]}
            if r.status_code != 200:
                msg = str(body.get("message", f"HTTP {r.status_code}"))
                cls = KeyReleaseDenied if r.status_code in (401, 403) else SensitiveDataError
                raise cls(f"key release for {uri} refused: {msg}", hint=str(body.get("hint", "")))
            key = DataKey.from_json(body)
            self._keys[uri] = key
            return key

    def __getstate__(self) -> dict[str, Any]:
        # A shard reader sent to a DataLoader worker (spawn) carries its provider: keys already
        # released travel with it (local IPC, same job), so workers need not ask again.
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


_default_client: KeyReleaseClient | None = None


def _default_keys(uri: str) -> DataKey:
    global _default_client
    if _default_client is None:
        _default_client = KeyReleaseClient()
    return _default_client(uri)


def parse_header(blob: bytes | mmap.mmap, where: str) -> Header | None:
    """The header at the start of ``blob`` (bytes, a map), or None if it is not an encrypted file."""
    if blob[:len(MAGIC)] != MAGIC:  # a plain shard: touch no more of its map than this
        return None
    return Header.read(io.BytesIO(blob[:_FIXED.size + 0xFFFF]), where)


class FixedKey:
    """A key provider that always answers with one data key (picklable, unlike a lambda): for tools
    and tests that hold the key themselves."""

    def __init__(self, key: DataKey) -> None:
        self.key = key

    def __call__(self, uri: str) -> DataKey:
        return self.key


def key_provider(key: DataKey | KeyProvider | None) -> KeyProvider:
    """A provider from what a reader was given: a key, a provider, or None for the job's credential."""
    if key is None:
        return _default_keys
    return FixedKey(key) if isinstance(key, DataKey) else key


def _open_raw(path: str | os.PathLike[str]) -> BinaryIO:
    text = os.fspath(path)
    if "://" not in text or text.startswith("file://"):
        return io.open(text.removeprefix("file://"), "rb")  # noqa: UP020 (builtin open is shadowed here)
    from modelplane.data._deps import require

    fsspec: Any = require("fsspec")
    f: BinaryIO = fsspec.open(text, "rb").open()
    return f


def open(path: str | os.PathLike[str], mode: str = "rb", *, keys: KeyProvider | None = None,
         encoding: str | None = None) -> IO[Any]:
    """Open a data file for reading, decrypting it if it is a sensitive dataset's.

    A plain file opens as it is, so training and pipeline code reads every dataset the same way.
    For an encrypted one the dataset's key comes from ``keys`` (default: the control plane, with
    this job's credential) and a refusal is a ``KeyReleaseDenied`` naming why."""
    if mode not in ("rb", "r"):
        raise DataError(f"mode {mode!r}: sensitive.open only reads", field="mode", hint="use 'rb' or 'r'")
    raw = _open_raw(path)
    try:
        stream = decrypting(raw, os.fspath(path), keys=keys)
    except BaseException:
        raw.close()
        raise
    return io.TextIOWrapper(stream, encoding=encoding or "utf-8") if mode == "r" else stream


def decrypting(raw: IO[bytes], where: str, *, keys: KeyProvider | None = None) -> IO[bytes]:
    """``raw`` itself if it is a plain file, else a reader of its plaintext (the key released to
    this job); for readers that open files their own way (fsspec with storage options)."""
    header = Header.read(raw, where)
    raw.seek(0)
    if header is None:
        return raw
    key = (keys or _default_keys)(header.uri)
    return io.BufferedReader(DecryptingReader(raw, header, key, where), SEGMENT)


def read_bytes(path: str | os.PathLike[str], *, keys: KeyProvider | None = None) -> bytes:
    with open(path, keys=keys) as f:
        data: bytes = f.read()
        return data


def is_encrypted(path: str | os.PathLike[str]) -> bool:
    with _open_raw(path) as f:
        return f.read(len(MAGIC)) == MAGIC


# --------------------------------------------------------------------------- protecting a dataset
@dataclass
class ProtectReport:
    uri: str
    key_id: str
    encrypted: int = 0
    already: int = 0
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "keyId": self.key_id, "encrypted": self.encrypted, "already": self.already,
                "bytes": self.bytes}


TMP_SUFFIX = ".mpsd-tmp"


class _Tree:
    """The files of a dataset: a local folder (or file) through the OS, anything else through fsspec."""

    def __init__(self, uri: str) -> None:
        self.local = local_path(uri)
        self.fs: Any = None
        if self.local is None:
            from modelplane.data._deps import require

            fsspec: Any = require("fsspec")
            self.fs, self.root = fsspec.core.url_to_fs(uri)
        self.uri = uri

    def files(self) -> list[str]:
        if self.local is not None:
            if self.local.is_file():
                return [str(self.local)]
            if not self.local.is_dir():
                raise DataError(f"dataset {self.uri} does not exist", field="uri", hint="check the path")
            found = [str(p) for p in self.local.rglob("*") if p.is_file()]
        else:
            if not self.fs.exists(self.root):
                raise DataError(f"dataset {self.uri} does not exist", field="uri", hint="check the URL")
            found = [self.root] if self.fs.isfile(self.root) else list(self.fs.find(self.root))
        return sorted(f for f in found if not f.endswith(TMP_SUFFIX))

    def open(self, name: str, mode: str) -> IO[bytes]:
        if self.local is not None:
            return io.open(name, mode)  # noqa: UP020 (builtin open is shadowed in this module)
        f: IO[bytes] = self.fs.open(name, mode)
        return f

    def sync(self, f: IO[bytes]) -> None:
        if self.local is not None:
            f.flush()
            os.fsync(f.fileno())

    def replace(self, src: str, dst: str) -> None:
        if self.local is not None:
            os.replace(src, dst)  # atomic on one file system
        else:
            self.fs.mv(src, dst)

    def remove(self, name: str) -> None:
        if self.local is not None:
            Path(name).unlink(missing_ok=True)
        elif self.fs.exists(name):
            self.fs.rm(name)


def encrypt_dataset(uri: str, key: DataKey, *, register: Callable[[], None] | None = None,
                    segment: int = SEGMENT) -> ProtectReport:
    """Encrypt every file of a dataset in place, in two phases so that no data can be lost: each
    plaintext file is first encrypted next to itself (``NAME.mpsd-tmp``); then ``register`` hands
    the key to the control plane (``PUT /datasets/...``); only then do the encrypted copies replace
    the plaintext. If anything fails before that, the copies are removed and the data is as it was.
    Files already encrypted with this key are counted and left alone; with another key, an error."""
    uri = normalize_uri(uri)
    tree = _Tree(uri)
    report = ProtectReport(uri, key.key_id)
    staged: list[tuple[str, str]] = []
    try:
        for name in tree.files():
            with tree.open(name, "rb") as f:
                header = Header.read(f, name)
                if header is not None:
                    _check_same_key(header, key, name)
                    report.already += 1
                    continue
                f.seek(0)
                tmp = name + TMP_SUFFIX
                staged.append((tmp, name))
                with tree.open(tmp, "wb") as out:
                    report.bytes += encrypt_stream(f, out, uri, key, segment)
                    tree.sync(out)
        if register is not None:
            register()
    except BaseException:
        for tmp, _ in staged:
            tree.remove(tmp)
        raise
    for tmp, name in staged:
        tree.replace(tmp, name)
        report.encrypted += 1
    return report


def _check_same_key(header: Header, key: DataKey, where: str) -> None:
    if header.key_id != key.key_id:
        raise SensitiveDataError(f"{where} is already encrypted with another key ({header.key_id})",
                                 hint="it belongs to another protection of this data; restore the plaintext "
                                      "or keep it out of this dataset")


__all__ = ["DataKey", "DecryptingReader", "FixedKey", "Header", "KeyReleaseClient", "KeyReleaseDenied",
           "ProtectReport", "SealedFile", "SegmentCache", "SensitiveDataError", "encrypt_dataset",
           "encrypt_stream", "is_encrypted", "key_provider", "load_or_create_master_key", "normalize_uri",
           "open", "parse_header", "read_bytes", "unwrap_key", "wrap_key"]
