"""RFC 9162 Merkle tree hashing, proofs and their verification.

Hashes of every perfect subtree are kept in one ``bytearray`` per level (32 bytes a node), so a
tree of 1M leaves costs ~64 MiB and any historical root or proof is O(log n) lookups.
Verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2 and the edge cases of the
transparency-dev vectors: a consistency proof from size 0 is an error, equal sizes need an empty
proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from modelplane.security.errors import InvalidProof

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the prefix keeps a leaf from passing for an inner node."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class MerkleTree:
    """An append-only tree of leaf hashes that answers roots and proofs for any prefix size."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        self.extend(leaf_hashes)

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> int:
        """Add one leaf hash; returns its index."""
        if len(leaf) != HASH_SIZE:
            raise InvalidProof(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf)}")
        index = self._size
        levels = self._levels
        levels[0] += leaf
        level, pos = 0, index
        while pos & 1:
            row = levels[level]
            start = (pos - 1) * HASH_SIZE
            parent = hashlib.sha256(b"\x01" + row[start : start + 2 * HASH_SIZE]).digest()
            level += 1
            pos >>= 1
            if level == len(levels):
                levels.append(bytearray())
            levels[level] += parent
        self._size = index + 1
        return index

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def leaf(self, index: int) -> bytes:
        self._check_index(index, self._size)
        return bytes(self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def _perfect(self, level: int, pos: int) -> bytes:
        row = self._levels[level]
        return bytes(row[pos * HASH_SIZE : (pos + 1) * HASH_SIZE])

    def subtree_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range that the RFC recursion produces."""
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n & (n - 1) == 0 and start % n == 0:
            level = n.bit_length() - 1
            return self._perfect(level, start >> level)
        k = _split(n)
        return node_hash(self.subtree_hash(start, start + k), self.subtree_hash(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        """The root hash of the first ``size`` leaves (default: all)."""
        size = self._size if size is None else size
        if not 0 <= size <= self._size:
            raise InvalidProof(f"tree size {size} is beyond the log size {self._size}")
        return self.subtree_hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) of RFC 9162 2.1.3.1."""
        size = self._size if size is None else size
        if not 0 < size <= self._size:
            raise InvalidProof(f"tree size {size} must be in 1..{self._size}")
        self._check_index(index, size)
        proof: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                proof.append(self.subtree_hash(start + k, end))
                end = start + k
            else:
                proof.append(self.subtree_hash(start, start + k))
                start += k
        proof.reverse()
        return proof

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        """PROOF(size1, D[0:size2]) of RFC 9162 2.1.4.1; empty for equal sizes."""
        size2 = self._size if size2 is None else size2
        if not 0 < size1 <= size2 <= self._size:
            raise InvalidProof(
                f"consistency proof needs 0 < size1 <= size2 <= {self._size}, got {size1}, {size2}",
                hint="a proof from the empty tree is meaningless; use size1 >= 1",
            )
        proof: list[bytes] = []
        m, start, end, complete = size1, 0, size2, True
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self.subtree_hash(start + k, end))
                end = start + k
            else:
                proof.append(self.subtree_hash(start, start + k))
                m -= k
                start += k
                complete = False
        if not complete:
            proof.append(self.subtree_hash(start, end))
        proof.reverse()
        return proof

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if not 0 <= index < size:
            raise InvalidProof(f"leaf index {index} is outside the tree of size {size}")


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    return MerkleTree(leaf_hashes).root()


def _check_hash(name: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise InvalidProof(f"{name} must be {HASH_SIZE} bytes, got {len(value)}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 2.1.3.2 steps 1-5)."""
    if not 0 <= index < size:
        raise InvalidProof(f"leaf index {index} is outside the tree of size {size}")
    _check_hash("leaf hash", leaf)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise InvalidProof("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ``InvalidProof`` unless ``leaf`` sits at ``index`` of the tree with ``root``."""
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise InvalidProof(f"inclusion proof for leaf {index} in tree size {size} does not match the root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes] | None, root1: bytes, root2: bytes
) -> None:
    """Raise ``InvalidProof`` unless the tree ``root2`` of ``size2`` extends ``root1`` of ``size1``."""
    proof = list(proof or ())
    if size2 < size1:
        raise InvalidProof(f"size2 ({size2}) is smaller than size1 ({size1})")
    if size1 == 0:
        raise InvalidProof("a consistency proof from the empty tree is meaningless", hint="use size1 >= 1")
    if size1 == size2:
        if proof:
            raise InvalidProof("equal tree sizes need an empty consistency proof")
        if root1 != root2:
            raise InvalidProof("equal tree sizes but different roots")
        return
    if not proof:
        raise InvalidProof("empty consistency proof for different tree sizes")
    if size1 & (size1 - 1) == 0:
        proof = [root1, *proof]
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise InvalidProof("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProof("consistency proof is too short")
    if fr != root1:
        raise InvalidProof(f"consistency proof does not reproduce the root of size {size1}")
    if sr != root2:
        raise InvalidProof(f"consistency proof does not reproduce the root of size {size2}")
