"""RFC 9162 hashing and proofs against the transparency-dev and RFC 6962 vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelplane.security.audit.merkle import (
    MerkleTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from modelplane.security.errors import InvalidProof

VECTORS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "vectors"
TESTDATA = VECTORS / "merkle-transparency-dev" / "testdata"


def _b64(s: str) -> bytes:
    return base64.b64decode(s)


def _cases(kind: str) -> list[Path]:
    files = sorted((TESTDATA / kind).rglob("*.json"))
    assert files, f"no vectors under {TESTDATA / kind}: is ../shared/data present?"
    return files


@pytest.mark.parametrize("path", _cases("inclusion"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_inclusion_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (
        v["leafIdx"],
        v["treeSize"],
        _b64(v["leafHash"]),
        [_b64(p) for p in v["proof"] or []],
        _b64(v["root"]),
    )
    if v["wantErr"]:
        with pytest.raises(InvalidProof):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _cases("consistency"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_consistency_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (v["size1"], v["size2"], [_b64(p) for p in v["proof"] or []], _b64(v["root1"]), _b64(v["root2"]))
    if v["wantErr"]:
        with pytest.raises(InvalidProof):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_vector_counts_are_complete() -> None:
    # Guards against a vector directory silently going missing.
    assert len(_cases("inclusion")) == 98
    assert len(_cases("consistency")) == 98


RFC = json.loads((VECTORS / "rfc6962_tree_vectors.json").read_text())


def test_rfc6962_roots_for_every_size() -> None:
    leaves = [leaf_hash(bytes.fromhex(h)) for h in RFC["leaf_inputs_hex"]]
    tree = MerkleTree(leaves)
    for size, want in enumerate(RFC["root_hashes_by_size_hex"]):
        assert tree.root(size).hex() == want


def test_rfc6962_hash_units() -> None:
    units = RFC["hash_unit_vectors"]
    assert MerkleTree().root().hex() == units["empty_tree"]
    assert leaf_hash(b"").hex() == units["leaf_empty"]
    assert leaf_hash(b"L123456").hex() == units["leaf('L123456')"]
    assert node_hash(b"N123", b"N456").hex() == units["node('N123','N456')"]


def test_generated_proofs_match_vector_proofs() -> None:
    """Our proof generator emits exactly the happy-path proofs of the 8-leaf vector tree."""
    leaves = [leaf_hash(bytes.fromhex(h)) for h in RFC["leaf_inputs_hex"]]
    tree = MerkleTree(leaves)
    for path in _cases("inclusion"):
        v = json.loads(path.read_text())
        if path.stem == "happy-path" and v["treeSize"] <= 8:
            assert tree.inclusion_proof(v["leafIdx"], v["treeSize"]) == [_b64(p) for p in v["proof"] or []]
    for path in _cases("consistency"):
        v = json.loads(path.read_text())
        if (
            path.stem == "happy-path"
            and v["size2"] <= 8
            and v["root2"] == base64.b64encode(tree.root(v["size2"])).decode()
        ):
            assert tree.consistency_proof(v["size1"], v["size2"]) == [_b64(p) for p in v["proof"] or []]


def test_consistency_from_zero_is_refused_by_the_generator() -> None:
    tree = MerkleTree([leaf_hash(b"a")])
    with pytest.raises(InvalidProof, match="empty tree"):
        tree.consistency_proof(0, 1)
    assert tree.consistency_proof(1, 1) == []


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), data=st.data())
def test_every_generated_proof_verifies_and_a_flipped_bit_fails(n: int, data: st.DataObject) -> None:
    tree = MerkleTree(leaf_hash(i.to_bytes(4, "big")) for i in range(n))
    size = data.draw(st.integers(1, n))
    index = data.draw(st.integers(0, size - 1))
    proof = tree.inclusion_proof(index, size)
    verify_inclusion(index, size, tree.leaf(index), proof, tree.root(size))
    size1 = data.draw(st.integers(1, size))
    cproof = tree.consistency_proof(size1, size)
    verify_consistency(size1, size, cproof, tree.root(size1), tree.root(size))
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof]
        bad[k] = bytes([bad[k][0] ^ 1]) + bad[k][1:]
        with pytest.raises(InvalidProof):
            verify_inclusion(index, size, tree.leaf(index), bad, tree.root(size))
    if cproof:
        bad = [*cproof]
        bad[-1] = bytes([bad[-1][0] ^ 1]) + bad[-1][1:]
        with pytest.raises(InvalidProof):
            verify_consistency(size1, size, bad, tree.root(size1), tree.root(size))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 100))
def test_incremental_root_equals_recursive_definition(n: int) -> None:
    leaves = [leaf_hash(bytes([i % 256, i // 256])) for i in range(n)]

    def mth(items: list[bytes]) -> bytes:
        if not items:
            return MerkleTree().root()
        if len(items) == 1:
            return items[0]
        k = 1 << ((len(items) - 1).bit_length() - 1)
        return node_hash(mth(items[:k]), mth(items[k:]))

    assert MerkleTree(leaves).root() == mth(leaves)
